"""Tune storage on a small tmpfs that fills up mid-sweep: one clear error naming the path,
finished trials intact, and --resume completes once space is freed.

Needs a private mount namespace (root with CAP_SYS_ADMIN, as in CI); skipped elsewhere. The
whole scenario runs in one `unshare --mount` shell, since the tmpfs exists only inside it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.orchestrator.fake_trainable:fake_trial"
SPACE = ("methods: [baseline, {method: llm_lora, sublayers: [attn]}]\nranks: [1, 2]\n"
         "llms: [flan-t5-xl]\nbenchmarks: [iconqa]\nepochs: 3\n")
SCENARIO = r"""
set -u
mount -t tmpfs -o size=64m tmpfs "$D/rr"
$SWEEP > "$D/first.log" 2>&1 &
pid=$!
while ! grep -q '^end ' "$D/trials.log" 2>/dev/null; do
  kill -0 $pid 2>/dev/null || break; sleep 0.5
done
# Fill the storage, leaving 4 MiB: below what the sweep needs to keep writing checkpoints.
"$PY" -c "import os; s = os.statvfs('$D/rr'); n = s.f_bavail * s.f_frsize - 4 * 2**20; \
open('$D/rr/filler', 'wb').write(b'\0' * n)"
wait $pid; echo "first exit $?"
rm "$D/rr/filler"
$SWEEP --resume > "$D/second.log" 2>&1; echo "second exit $?"
umount "$D/rr"
"""


def can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /mnt && umount /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.integration
def test_a_full_storage_stops_cleanly_and_resumes(tmp_path):
    if not can_mount():
        pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN (a private mount namespace)")
    (tmp_path / "full.yaml").write_text(SPACE)
    (tmp_path / "rr").mkdir()
    sweep = " ".join([sys.executable, "-m", "orchestrator.sweep", "--space",
                      str(tmp_path / "full.yaml"), "--scheduler", "fifo", "--no-retune",
                      "--max-concurrent", "1", "--storage", str(tmp_path / "rr"),
                      "--cache-dir", str(tmp_path / "cache"),
                      "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                      "--report-dir", str(tmp_path / "report"), "--trainable", FAKE])
    env = {**os.environ, "D": str(tmp_path), "SWEEP": sweep, "PY": sys.executable,
           "RAY_USAGE_STATS_ENABLED": "0", "FAKE_TRIAL_SLEEP_S": "2",
           "FAKE_TRIAL_LOG": str(tmp_path / "trials.log"), "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                           SCENARIO], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    first = (tmp_path / "first.log").read_text()
    second = (tmp_path / "second.log").read_text()
    assert "first exit 4" in proc.stdout, proc.stdout + proc.stderr + first[-3000:]
    assert f"storage {tmp_path / 'rr'} is full" in first, first[-3000:]
    assert "Traceback" not in first and "--resume" in first, first[-3000:]
    assert "second exit 0" in proc.stdout, second[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp = client.get_experiment_by_name("sweep-full")
    trials = client.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'")
    assert len(trials) == 3 and {t.info.status for t in trials} == {"FINISHED"}
    log = (tmp_path / "trials.log").read_text().splitlines()
    ends = [line for line in log if line.startswith("end")]
    assert len(ends) == len(set(ends)) == 3  # the finished trial was not trained again
