"""orchestrator.driver.cluster: a cluster address that does not answer is a clear error in seconds.
(The storage-sharing check needs a multi-node cluster: tests/cluster/test_node_loss.py.)"""
from __future__ import annotations

import socket
import time

import pytest

from orchestrator.driver.cluster import ClusterError, check_address, parse_address


def free_port(host: str = "127.0.0.9") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address, target", [
    ("127.0.0.3:6390", ("127.0.0.3", 6390)),
    ("head.example:6379", ("head.example", 6379)),
    ("head.example", ("head.example", 6379)),
    ("ray://127.0.0.3:10011", ("127.0.0.3", 10011)),
    ("ray://head.example", ("head.example", 10001)),
    ("http://127.0.0.3:8275", ("127.0.0.3", 8275)),
    ("local", None),
    ("auto", None),
])
def test_parse_address_finds_what_to_probe(address: str, target) -> None:
    assert parse_address(address) == target


def test_parse_address_rejects_unknown_schemes() -> None:
    with pytest.raises(ClusterError, match=r"unknown scheme 'grpc'"):
        parse_address("grpc://127.0.0.3:6390")


def test_address_that_does_not_answer_fails_fast_and_says_what_to_do(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = f"127.0.0.9:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ClusterError) as err:
        check_address(address, timeout_s=2)
    assert time.monotonic() - started < 3
    message = str(err.value)
    assert message.startswith(f"Ray cluster address '{address}' (--address) does not answer")
    assert f"ray status --address {address}" in message and "Nothing was started" in message


def test_ray_address_from_the_environment_is_checked_too(monkeypatch) -> None:
    address = f"127.0.0.9:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(ClusterError, match=r"\(\$RAY_ADDRESS\) does not answer"):
        check_address(None, timeout_s=2)


def test_listening_address_and_local_ray_pass(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_address(None)
    check_address("local")
    with socket.socket() as server:
        server.bind(("127.0.0.9", 0))
        server.listen(1)
        check_address(f"127.0.0.9:{server.getsockname()[1]}", timeout_s=2)


@pytest.mark.integration
def test_waiting_for_gpus_that_never_come_is_a_clear_error_in_bounded_time() -> None:
    import ray

    from orchestrator.driver.cluster import wait_for_gpus
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        assert wait_for_gpus(0) == 0  # CPU-only sweeps never wait
        started = time.monotonic()
        with pytest.raises(ClusterError, match=r"--gpus-per-trial 1, but no GPU joined the Ray cluster within 2s"):
            wait_for_gpus(1, timeout_s=2, poll_s=0.5)
        assert time.monotonic() - started < 10
    finally:
        ray.shutdown()


def _fake_cluster(monkeypatch, nodes: list[dict], joins_after: int | None = None) -> list:
    """ray.nodes() answers ``nodes`` (plus a 16-CPU node after ``joins_after`` polls); the
    autoscaler requests are recorded."""
    import ray
    import ray.autoscaler.sdk as sdk
    polls, requests = [0], []

    def fake_nodes() -> list[dict]:
        polls[0] += 1
        big = {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0}}
        return nodes + ([big] if joins_after is not None and polls[0] > joins_after else [])
    monkeypatch.setattr(ray, "nodes", fake_nodes)
    monkeypatch.setattr(sdk, "request_resources", lambda bundles: requests.append(bundles))
    return requests


def test_a_trial_no_node_can_hold_is_refused_naming_the_largest_node(monkeypatch) -> None:
    from orchestrator.driver.cluster import wait_for_fitting_node
    requests = _fake_cluster(monkeypatch, [
        {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}},
        {"Alive": True, "Resources": {"CPU": 8.0}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}])  # a dead node holds nothing
    wait_for_fitting_node(8, 0, timeout_s=0)  # the CPU node fits: no wait, no request
    wait_for_fitting_node(4, 1, timeout_s=0)
    assert requests == []
    with pytest.raises(ClusterError, match=r"6 CPUs and 1 GPUs on one node.*largest node: 4 "
                                           r"CPUs, 1 GPUs"):
        wait_for_fitting_node(6, 1, timeout_s=0.2, poll_s=0.05)  # CPUs and GPUs on one node
    assert requests == [[{"CPU": 6, "GPU": 1}], []]  # asked, then the request withdrawn


def test_a_node_the_autoscaler_adds_ends_the_wait(monkeypatch) -> None:
    from orchestrator.driver.cluster import wait_for_fitting_node
    requests = _fake_cluster(monkeypatch, [{"Alive": True, "Resources": {"CPU": 2.0}}],
                             joins_after=3)
    wait_for_fitting_node(12, 0, timeout_s=10, poll_s=0.01)
    assert requests == [[{"CPU": 12}], []]
