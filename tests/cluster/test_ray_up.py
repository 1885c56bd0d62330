"""`ray up` for real on this host: cluster.local.yaml's head (127.0.0.3) + one worker
(127.0.0.2) over a loopback-only sshd, the smoke sweep submitted as a Ray job, `ray down`.

The flow itself is tests/cluster/flow_ray_up.py, run in its own PID + mount namespaces where
the kernel allows (loopback.isolated_command): `ray stop`/`ray down` then cannot touch any other
Ray on the host, and the kernel reaps whatever the flow leaves behind.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from loopback import missing_tools, run_flow

FLOW = Path(__file__).with_name("flow_ray_up.py")
TIMEOUT_S = 420


@pytest.mark.integration
@pytest.mark.slow
def test_ray_up_cluster_local_runs_the_smoke_sweep_on_both_nodes(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the loopback sshd logs in as root on port 22 (CI runs as root)")
    if missing := missing_tools():
        pytest.skip(f"missing {missing}: .ci/run installs openssh-server, openssh-client, rsync")
    out = tmp_path / "seen.json"
    proc = run_flow(FLOW, tmp_path / "work", out, timeout=TIMEOUT_S)
    assert proc.returncode == 0 and out.exists(), f"flow failed:\n{proc.stderr[-8000:]}"
    seen = json.loads(out.read_text())

    # ray up + ray exec 'ray status': head and worker are both active.
    assert " 2 local.cluster.node" in seen["status"], seen["status"]
    assert set(seen["nodes"]) == {"127.0.0.3", "127.0.0.2"}, seen["nodes"]

    # The smoke sweep ran as a Ray job, every trial finished, and trials ran on both nodes.
    assert seen["job_rc"] == 0, seen["job_output"]
    trials = seen["trials"]
    assert len(trials) == 4 and all(t["test_acc"] is not None for t in trials.values()), trials
    node_ids_used = {seen["nodes"][t["node_ip"]] for t in trials.values()}
    assert node_ids_used == set(seen["nodes"].values()), (trials, seen["nodes"])

    # ray down stopped the cluster: the head's GCS port is closed.
    assert seen["down_rc"] == 0
    assert seen["head_port_open_after_down"] is False
