"""cluster.yaml (AWS) and cluster.local.yaml, validated offline with Ray's own config
preparation and schema (no cloud credentials, no network: sockets are blocked), plus what the
project relies on: GPU workers that autoscale from zero, a CPU head, services on 127.0.0.1
only, the project installed on every node, artifacts in S3."""
from __future__ import annotations

import copy
import re
import socket
from pathlib import Path

import pytest
import yaml

from orchestrator.driver.cluster import ClusterError, check_cluster_config

REPO = Path(__file__).resolve().parents[2]
AWS = REPO / "cluster.yaml"
LOCAL = REPO / "cluster.local.yaml"
BROKEN = Path(__file__).with_name("broken_cluster.yaml")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline means offline: any connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during offline validation: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def aws() -> dict:
    return check_cluster_config(str(AWS))


def head_start(config: dict) -> str:
    return "\n".join(config["head_start_ray_commands"])


def test_cluster_yaml_passes_rays_preparation_and_schema(aws: dict) -> None:
    assert aws["provider"]["type"] == "aws"
    assert aws["head_node_type"] in aws["available_node_types"]


def test_gpu_workers_autoscale_from_zero_behind_a_cpu_head(aws: dict) -> None:
    types = aws["available_node_types"]
    head = types.pop(aws["head_node_type"])
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0, head["resources"]
    assert types, "no worker node types"
    for name, node in types.items():
        assert node["resources"]["GPU"] >= 1, name
        assert node["min_workers"] == 0 < node["max_workers"], name
        assert node["node_config"]["InstanceType"].startswith(("g5.", "p4d.", "p5.", "g6")), name
    assert sum(n["max_workers"] for n in types.values()) <= aws["max_workers"]


def test_dashboard_and_mlflow_listen_on_the_heads_loopback_only(aws: dict) -> None:
    start = head_start(aws)
    assert "--dashboard-host=127.0.0.1" in start
    assert re.search(r"mlflow server .*--host 127\.0\.0\.1", start), start
    assert "0.0.0.0" not in yaml.safe_dump(aws)
    # No ingress rule beyond Ray's default (SSH only, plus traffic inside the cluster).
    assert "IpPermissions" not in yaml.safe_dump(aws["provider"])


def test_every_node_gets_the_project_and_the_same_venv(aws: dict) -> None:
    assert aws["file_mounts"] == {"~/instructblip-peft": "."}
    assert ".gitignore" in aws["rsync_filter"]
    setup = "\n".join(aws["head_setup_commands"] + aws["worker_setup_commands"])
    assert "~/venv/bin/pip install -q -e ~/instructblip-peft" in setup
    workers = "\n".join(aws["worker_start_ray_commands"])
    assert "~/venv/bin/ray start --address=$RAY_HEAD_IP:6379" in workers


def test_storage_every_node_reaches_is_s3(aws: dict) -> None:
    assert re.search(r"--artifacts-destination s3://", head_start(aws))
    for name, node in aws["available_node_types"].items():
        if name != aws["head_node_type"]:  # workers write checkpoints to S3 themselves
            assert "IamInstanceProfile" in node["node_config"], name


def test_cluster_local_yaml_validates_with_the_local_provider() -> None:
    local = check_cluster_config(str(LOCAL))
    assert local["provider"]["head_ip"] == "127.0.0.3"
    assert local["provider"]["worker_ips"] == ["127.0.0.2"]
    ips = [local["provider"]["head_ip"], *local["provider"]["worker_ips"]]
    assert all(ip.startswith("127.") and ip != "127.0.0.1" for ip in ips)
    for cmd in local["head_start_ray_commands"] + local["worker_start_ray_commands"]:
        assert "RAY_AUTH_MODE=disabled" in cmd, cmd  # every SSH session: the same auth mode
    assert not any("ray stop" in c for c in local["worker_start_ray_commands"])


def test_broken_variant_is_rejected_naming_file_key_and_problem() -> None:
    with pytest.raises(ClusterError) as err:
        check_cluster_config(str(BROKEN))
    # ours: the file and where in it; the wording of the problem is Ray's schema validator's
    assert str(err.value).startswith(f"{BROKEN}: available_node_types.gpu_a10g: ")
    assert "'resources'" in str(err.value)


def mutate(tmp_path: Path, change) -> str:
    config = copy.deepcopy(yaml.safe_load(AWS.read_text()))
    change(config)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("change, where, key", [
    (lambda c: c.update(max_worker=3), "<top level>", "max_worker"),
    (lambda c: c.update(head_node_type="head"), None, "head_node_type"),
    (lambda c: c["available_node_types"]["gpu_a10g"].update(min_workers=20), None, "min_workers"),
    (lambda c: c["available_node_types"]["gpu_a10g"]["resources"].update(GPU="one"),
     "available_node_types.gpu_a10g.resources.GPU", "'one'"),
])
def test_mistakes_in_cluster_yaml_are_rejected(tmp_path: Path, change, where, key) -> None:
    """One error naming the file, where in it (when the validator says), and the culprit key or
    value; the rest of the message is Ray's wording, which may change between releases."""
    path = mutate(tmp_path, change)
    with pytest.raises(ClusterError) as err:
        check_cluster_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert key in message
    if where is not None:
        assert message.startswith(f"{path}: {where}: ")


def test_unreadable_or_foreign_yaml_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="cannot read cluster config"):
        check_cluster_config(str(tmp_path / "missing.yaml"))
    other = tmp_path / "space.yaml"
    other.write_text("methods: [baseline]\n")
    with pytest.raises(ClusterError, match="not a Ray cluster config"):
        check_cluster_config(str(other))
