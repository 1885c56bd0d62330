"""--resume after the driver is SIGKILLed: finished trials are not re-run, none is lost, and
MLflow holds exactly one child run per trial."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from _fake_sweep import crash_driver_when

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.orchestrator.fake_trainable:fake_trial"
SPACE = ("methods: [baseline, {method: llm_lora, sublayers: [attn]}]\nranks: [1, 2]\n"
         "llms: [flan-t5-xl]\nbenchmarks: [scienceqa, iconqa]\nepochs: 3\n")
N_TRIALS = 6


def command(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.sweep", "--space", str(tmp_path / "resume.yaml"),
            "--scheduler", "fifo", "--no-retune", "--storage", str(tmp_path / "rr"),
            # pinned: the kill must land while some trials are unfinished, whatever the core count
            "--max-concurrent", "2",
            "--cache-dir", str(tmp_path / "cache"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
            "--report-dir", str(tmp_path / "report"), "--trainable", FAKE, *extra]


def finished_trials(tmp_path: Path) -> int:
    """Trials whose result.json holds their final report (best_epoch)."""
    count = 0
    for result in (tmp_path / "rr" / "sweep-resume").glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        count += any("best_epoch" in r for r in lines)
    return count


@pytest.mark.integration
def test_sigkill_then_resume_finishes_without_rerunning_or_duplicating(tmp_path):
    (tmp_path / "resume.yaml").write_text(SPACE)
    trial_log = tmp_path / "trials.log"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FAKE_TRIAL_SLEEP_S": "1.5",
           "FAKE_TRIAL_LOG": str(trial_log)}
    # once a trial has finished, 2 s more let Tune's experiment state (snapshotted every ~1 s) record it
    ready = crash_driver_when(command(tmp_path), REPO, env, lambda: finished_trials(tmp_path) >= 1,
                              settle_s=2.0)
    assert ready, "no trial finished before the deadline"
    done_before = [line.split()[1] for line in trial_log.read_text().splitlines() if line.startswith("end ")]
    assert 1 <= len(done_before) < N_TRIALS

    second = subprocess.run(command(tmp_path, "--resume"), cwd=REPO, env=env, timeout=600,
                            capture_output=True, text=True, start_new_session=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"{N_TRIALS} cells: {N_TRIALS} ran to the end" in second.stdout

    lines = trial_log.read_text().splitlines()
    ends = Counter(line.split()[1] for line in lines if line.startswith("end "))
    assert len(ends) == N_TRIALS  # every trial finished
    # A trial may end twice only if it ended in the ~1 s before the kill that the experiment
    # state had not snapshotted yet; it then resumes from its last checkpoint, not from scratch.
    assert sum(ends.values()) - N_TRIALS <= 2
    restarted = [line for line in lines
                 if line.startswith("start ") and line.split()[1] in done_before
                 and line.endswith("epoch=1")]
    assert len(restarted) == len(done_before)  # finished trials never started again

    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp = client.get_experiment_by_name("sweep-resume")
    parents = client.search_runs([exp.experiment_id], "tags.`sweep.role` = 'parent'")
    children = client.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'", max_results=100)
    assert len(parents) == 1
    assert len(children) == N_TRIALS
    assert len({r.data.tags["cell_id"] for r in children}) == N_TRIALS


@pytest.mark.integration
def test_failing_trials_are_retried_from_their_checkpoint(tmp_path):
    (tmp_path / "resume.yaml").write_text(SPACE)
    (tmp_path / "fail").mkdir()
    trial_log = tmp_path / "trials.log"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FAKE_TRIAL_LOG": str(trial_log),
           "FAKE_TRIAL_FAIL_ONCE": str(tmp_path / "fail")}
    proc = subprocess.run(command(tmp_path), cwd=REPO, env=env, timeout=600,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{N_TRIALS} cells: {N_TRIALS} ran to the end" in proc.stdout and "0 failed" in proc.stdout
    assert len(list((tmp_path / "fail").iterdir())) == N_TRIALS  # every trial did fail once
    lines = trial_log.read_text().splitlines()
    # Each retry resumed from the epoch-1 checkpoint, not from scratch.
    assert sum(line.startswith("start ") and line.endswith("epoch=2") for line in lines) == N_TRIALS
