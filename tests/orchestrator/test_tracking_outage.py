"""The MLflow server stops for 5 minutes in the middle of a sweep and comes back.

The sweep must not notice beyond one warning: trials keep training, what could not be logged
waits in the experiment directory's tracking outbox, and once the server answers again every
metric reaches it exactly once (the outbox replays with the original timestamps). The sweep
then ends normally: exit 0, parent FINISHED, Table 1 written, the outbox gone.

The outage lasts OUTAGE_TEST_S seconds: 90 by default, which is already longer than the driver's
MLflow client waits for one write (tracker.HTTP_DEFAULTS, ~20 s) plus two outbox retry periods
(outbox.RETRY_S), so every path (buffer, retry while down, replay) runs; `OUTAGE_TEST_S=300`
is the 5-minute outage of issue #16 (~7 min). The fake trainable trains nothing.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from _mlflow_server import FAKE_TRAINABLE, REPO, free_port, mlflow_server
from mlflow.tracking import MlflowClient

OUTAGE_S = float(os.environ.get("OUTAGE_TEST_S", "90"))
EPOCHS = 9  # 4 cells, 2 at a time: 2 x 9 epochs of training, 20% longer than the outage
EPOCH_S = max(2, round(OUTAGE_S * 1.2 / (2 * EPOCHS)))
SPACE = ("methods: [baseline, {method: llm_lora, sublayers: [attn]}]\nranks: [1]\n"
         f"llms: [flan-t5-xl]\nbenchmarks: [scienceqa, iconqa]\nepochs: {EPOCHS}\n")


def reported_epochs(storage: Path) -> int:
    """Epoch reports Tune has recorded so far (result.json lines of all trials)."""
    return sum(len(f.read_text().splitlines()) for f in storage.glob("*/*/result.json"))


@pytest.mark.integration
@pytest.mark.slow
def test_a_five_minute_outage_loses_and_doubles_nothing(tmp_path):
    (tmp_path / "out.yaml").write_text(SPACE)
    server_dir, port = tmp_path / "server", free_port()
    server_dir.mkdir()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "orchestrator.sweep", "--space", str(tmp_path / "out.yaml"),
           "--scheduler", "fifo", "--no-retune", "--max-concurrent", "2",
           "--tracking-uri", url, "--storage", str(tmp_path / "rr"),
           "--cache-dir", str(tmp_path / "cache"), "--report-dir", str(tmp_path / "report"),
           "--trainable", FAKE_TRAINABLE]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FAKE_TRIAL_SLEEP_S": str(EPOCH_S),
           "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    with mlflow_server(server_dir, port=port):
        sweep = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + 240
        while reported_epochs(tmp_path / "rr") < 2:  # a first result reached MLflow
            assert sweep.poll() is None and time.monotonic() < deadline
            time.sleep(1)
    down_at, before = time.monotonic(), reported_epochs(tmp_path / "rr")
    time.sleep(OUTAGE_S)  # the server is stopped: the sweep keeps training
    trained_meanwhile = reported_epochs(tmp_path / "rr") - before
    assert sweep.poll() is None, "the sweep ended during the outage"
    with mlflow_server(server_dir, port=port):
        out, _ = sweep.communicate(timeout=900)
        outage_s = time.monotonic() - down_at
        client = MlflowClient(url)
        exp = client.get_experiment_by_name("sweep-out")
        parents = client.search_runs([exp.experiment_id], "tags.`sweep.role` = 'parent'")
        trials = client.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'")
        histories = {t.data.tags["cell_id"]: [(m.step, m.timestamp) for m in
                                       client.get_metric_history(t.info.run_id, "val_acc")]
                     for t in trials}
    print(out[-2500:])
    assert sweep.returncode == 0, out[-4000:]
    assert outage_s >= OUTAGE_S and trained_meanwhile >= 4, (outage_s, trained_meanwhile)
    assert "MLflow unreachable" in out and "Traceback" not in out
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert len(trials) == 4 and {t.info.status for t in trials} == {"FINISHED"}
    for name, history in histories.items():  # every epoch once, none twice
        assert sorted(step for step, _ in history) == list(range(1, EPOCHS + 1)), (name, history)
        assert max(Counter(history).values()) == 1
    assert (tmp_path / "report" / "table1.md").is_file()
    assert not (tmp_path / "rr" / "sweep-out" / "tracking-outbox").exists()
