"""A local sweep as a user lives it: its sockets, SIGTERM, a planted checkpoint, Ctrl-C, resume.

One sweep (6 cells of the fast fake trainable), interrupted twice and resumed, because each
start of Ray costs ~10 s of the CI budget:

1. while it trains, every socket its process tree listens on is on loopback;
2. SIGTERM (what `kill` or a batch scheduler sends): exit 143, parent run KILLED, no Table 1,
   the --resume command printed;
3. a checkpoint replaced by a pickle payload: --resume refuses it before Ray starts, naming
   the file, and the payload never runs;
4. Ctrl-C (SIGINT to the whole process group, as a terminal sends it): exit 130;
5. --resume finishes: exactly one MLflow run per cell, and no trial that was FINISHED when a
   session was interrupted is started again. (A trial whose last report was still on its way
   when the signal came is not finished for Tune: it resumes from its last checkpoint.)
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.orchestrator.fake_trainable:fake_trial"
SPACE = ("methods: [baseline, {method: llm_lora, sublayers: [attn]}]\nranks: [1, 2]\n"
         "llms: [flan-t5-xl]\nbenchmarks: [scienceqa, iconqa]\nepochs: 3\n")
CELLS = 6


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def command(tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.sweep", "--space", str(tmp / "ctrl.yaml"),
            "--scheduler", "fifo", "--no-retune", "--max-concurrent", "2",
            "--storage", str(tmp / "rr"), "--cache-dir", str(tmp / "cache"),
            "--tracking-uri", f"sqlite:///{tmp}/m.db", "--report-dir", str(tmp / "report"),
            "--trainable", FAKE, *extra]


def start(tmp: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FAKE_TRIAL_SLEEP_S": "2",
           "FAKE_TRIAL_LOG": str(tmp / "trials.log"), "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(command(tmp, *extra), cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def ended(tmp: Path) -> list[str]:
    log = tmp / "trials.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split()[1] for line in lines if line.startswith("end ")]


def started(tmp: Path) -> Counter:
    """How often each cell's trial was started (a resumed one counts again)."""
    log = tmp / "trials.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.split()[1] for line in lines if line.startswith("start "))


def final_results(tmp: Path) -> int:
    """Trials whose last report (it holds test_acc) Tune has recorded in its result.json."""
    files = (tmp / "rr" / "sweep-ctrl").glob("*/result.json")
    return sum('"test_acc"' in f.read_text() for f in files)


def wait_for(done: Callable[[], bool], proc: subprocess.Popen, what: str,
             timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        time.sleep(0.5)


def listening_sockets(pid: int) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of ``pid`` and its tree."""
    tree = {pid} | {p.pid for p in psutil.Process(pid).children(recursive=True)}
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in tree:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.NoSuchProcess:
                continue
            found.append((conn.laddr.ip, conn.laddr.port, name))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def finish(proc: subprocess.Popen, timeout_s: float = 180) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out


def mlflow_runs(tmp: Path) -> tuple[list, list]:
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp}/m.db")
    exp = client.get_experiment_by_name("sweep-ctrl")
    parents = client.search_runs([exp.experiment_id], "tags.`sweep.role` = 'parent'")
    trials = client.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'",
                                max_results=100)
    return parents, trials


def plant_payload(tmp: Path, marker: Path) -> Path:
    """Add a pickle payload as state.pt (with a plausible meta.json) to the newest checkpoint,
    as someone with write access to a shared storage could."""
    target = max((tmp / "rr" / "sweep-ctrl").glob("*/checkpoint_*"),
                 key=lambda p: p.stat().st_mtime)
    (target / "meta.json").write_text(json.dumps({"config": {}, "epoch": 1}))
    torch.save({"optimizer": {}, "loop": Payload(marker)}, target / "state.pt")
    return target


@pytest.mark.integration
def test_sigterm_ctrl_c_and_a_planted_checkpoint_then_resume(tmp_path):
    (tmp_path / "ctrl.yaml").write_text(SPACE)
    first = start(tmp_path)
    wait_for(lambda: final_results(tmp_path) >= 1, first, "a trial's final result")
    sockets = listening_sockets(first.pid)
    assert len(sockets) >= 3, sockets  # the GCS, the raylet, the agents, the workers
    assert all(is_loopback(ip) for ip, _, _ in sockets), sockets
    first.send_signal(signal.SIGTERM)  # to the driver alone, as `kill PID` does
    code, out = finish(first)
    assert code == 143, out[-3000:]
    assert "interrupted by SIGTERM" in out and "--resume" in out, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    assert not (tmp_path / "report" / "table1.md").exists()
    parents, trials = mlflow_runs(tmp_path)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert all(t.info.status != "RUNNING" for t in trials)
    finished = {t.data.tags["cell_id"]: started(tmp_path)[t.data.tags["cell_id"]]
                for t in trials if t.info.status == "FINISHED"}

    marker = tmp_path / "pwned"
    planted = plant_payload(tmp_path, marker)
    refused = subprocess.run(command(tmp_path, "--resume"), cwd=REPO, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert str(planted / "state.pt") in refused.stderr and "GLOBAL posix.system" in refused.stderr
    assert not marker.exists()
    (planted / "state.pt").unlink()
    (planted / "meta.json").unlink()

    second = start(tmp_path, "--resume")
    before = final_results(tmp_path)
    wait_for(lambda: final_results(tmp_path) > before, second, "another final result")
    os.killpg(second.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
    code, out = finish(second)
    assert code == 130, out[-3000:]
    assert "interrupted by SIGINT" in out and "Traceback" not in out, out[-3000:]
    _, trials = mlflow_runs(tmp_path)
    finished |= {t.data.tags["cell_id"]: started(tmp_path)[t.data.tags["cell_id"]]
                 for t in trials if t.info.status == "FINISHED" and
                 t.data.tags["cell_id"] not in finished}

    third = start(tmp_path, "--resume")
    code, out = finish(third, timeout_s=400)
    assert code == 0, out[-3000:]
    assert (tmp_path / "report" / "table1.md").exists()
    parents, trials = mlflow_runs(tmp_path)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert len(trials) == CELLS, sorted(t.info.run_name for t in trials)
    assert Counter(t.data.tags["cell_id"] for t in trials).most_common(1)[0][1] == 1
    assert {t.info.status for t in trials} == {"FINISHED"}
    assert finished, "no trial had finished before the interruptions: nothing was tested"
    starts = started(tmp_path)
    assert {c: starts[c] for c in finished} == finished  # a finished trial never ran again
    assert len(set(ended(tmp_path))) == CELLS
