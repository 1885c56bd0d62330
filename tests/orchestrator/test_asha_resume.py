"""ASHA decisions survive --resume: a sweep SIGKILLed after ASHA stopped some trials, then
resumed, stops exactly the trials an uninterrupted sweep stops; every cell ends with a test score
(stopped ones scored from their checkpoints) and a predictions artifact."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _fake_sweep import crash_driver_when

from orchestrator.driver.scheduler_state import state_uri

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.orchestrator.fake_trainable:fake_trial"
# One group, in grid order from best to worst at epoch 1 (fake_trainable.val_acc), so ASHA
# (rungs at epochs 1 and 2, keeping the top half) stops trials throughout the sweep; a resumed
# ASHA with empty rungs would let the first trial after the restart through every rung.
SPACE = ("methods: [{method: llm_lora, sublayers: [all]}, {method: both_lora, sublayers: [all]},\n"
         "          {method: qformer_lora, sublayers: [all]}, baseline]\n"
         "ranks: [2, 1]\nllms: [flan-t5-xl]\nbenchmarks: [scienceqa]\nepochs: 4\n")
N_TRIALS = 7


def command(tmp_path: Path, run: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.sweep", "--space", str(tmp_path / "asha.yaml"),
            "--scheduler", "asha", "--grace-period", "1", "--reduction-factor", "2",
            "--max-concurrent", "1", "--no-retune", "--storage", str(tmp_path / run / "rr"),
            "--cache-dir", str(tmp_path / "cache"), "--tracking-uri",
            f"sqlite:///{tmp_path / run}/m.db", "--report-dir", str(tmp_path / run / "report"),
            "--trainable", FAKE, *extra]


def stopped_now(state_file: Path) -> list[str]:
    try:
        return json.loads(state_file.read_text())["stopped"]
    except (OSError, ValueError, KeyError):
        return []


def trial_runs(tmp_path: Path, run: str) -> list:
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / run}/m.db")
    exp = client.get_experiment_by_name("sweep-asha")
    runs = client.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'", max_results=100)
    return [(r, {a.path for a in client.list_artifacts(r.info.run_id)}) for r in runs]


def outcome(tmp_path: Path, run: str) -> dict[str, str]:
    """cell -> status; and every run must hold a test score and its predictions."""
    runs = trial_runs(tmp_path, run)
    assert len(runs) == N_TRIALS
    for r, artifacts in runs:
        assert "test_acc" in r.data.metrics, r.info.run_name
        assert "predictions" in artifacts, r.info.run_name
    return {r.data.tags["cell_id"]: r.data.tags["status"] for r, _ in runs}


@pytest.mark.integration
def test_resumed_asha_sweep_stops_the_same_trials(tmp_path):
    (tmp_path / "asha.yaml").write_text(SPACE)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FAKE_TRIAL_SLEEP_S": "0.5"}
    whole = subprocess.run(command(tmp_path, "whole"), cwd=REPO, env=env, timeout=600,
                           capture_output=True, text=True)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    expected = outcome(tmp_path, "whole")
    assert 2 <= sum(s == "stopped" for s in expected.values()) < N_TRIALS

    state = Path(state_uri(str(tmp_path / "cut" / "rr" / "sweep-asha")))
    ready = crash_driver_when(command(tmp_path, "cut"), REPO, env, lambda: len(stopped_now(state)) >= 1)
    at_kill = stopped_now(state)  # the driver that writes it is dead: what the crash left
    assert ready, "ASHA stopped no trial before the deadline"
    second = subprocess.run(command(tmp_path, "cut", "--resume"), cwd=REPO, env=env,
                            timeout=600, capture_output=True, text=True, start_new_session=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert outcome(tmp_path, "cut") == expected
    # The resumed half made decisions too: more stops after the restart than before it.
    assert len(stopped_now(state)) > len(at_kill)
    assert f"{N_TRIALS} cells" in second.stdout
