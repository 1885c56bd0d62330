"""The MLflow UI shows a finished smoke sweep: its trial runs and the trainable_fraction column.

Headless Chromium (Debian's package, installed by .ci/run) renders the experiment's runs table
through the view the tracker publishes (orchestrator.tracking.tracker.runs_view_url); a screenshot is
kept in test-artifacts/ for a person to look at.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _mlflow_server import REPO, SMOKE_CELLS, mlflow_server, rest, run_smoke_sweep

from orchestrator.tracking.mlflow_runs import run_name
from orchestrator.tracking.tracker import runs_view_url
from trainables.cell import parse_cell_id

pytestmark = pytest.mark.integration

RUN_NAMES = [run_name({"seed": 0}, parse_cell_id(cell)) for cell in SMOKE_CELLS]
"""What the runs page shows for the smoke cells: their MLflow run names (what differs first)."""
SCREENSHOT = REPO / "test-artifacts" / "mlflow_ui_runs.png"


def chromium() -> str:
    """The browser; missing is a failure in CI (CI=1/true), a skip on a developer machine."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
    pytest.skip("chromium is not installed (apt-get install chromium); required in CI")


def browse(browser: str, url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """One headless Chromium run on a fresh profile; the virtual-time budget lets the SPA
    fetch its runs and render before the DOM is dumped or the screenshot taken."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--virtual-time-budget=30000", "--window-size=2200,1100", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def visible_text(html: str) -> str:
    html = re.sub(r"<script.*?</script>|<style.*?</style>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_experiment_page_lists_the_trials_with_trainable_fraction(tmp_path):
    browser = chromium()
    with mlflow_server(tmp_path) as server:
        done = run_smoke_sweep(server, tmp_path, "smoke-ui")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        exp_id = rest(server, "experiments/get-by-name?experiment_name=smoke-ui")["experiment"][
            "experiment_id"]
        url = runs_view_url(server, exp_id)
        for attempt in range(3):  # a loaded machine may need longer than one budget
            text = visible_text(browse(browser, url, tmp_path / f"profile{attempt}",
                                       "--dump-dom").stdout)
            if all(name in text for name in RUN_NAMES) and "trainable_fraction" in text:
                break
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.unlink(missing_ok=True)
        browse(browser, url, tmp_path / "profile-shot", f"--screenshot={SCREENSHOT}")
    missing = [name for name in RUN_NAMES if name not in text]
    assert not missing, f"trial runs not on the page: {missing}\n{text[:2000]}"
    assert "trainable_fraction" in text and "best_val_acc" in text
    assert f"{len(SMOKE_CELLS)} matching runs" in text  # the trials only, no parent row
    assert SCREENSHOT.stat().st_size > 20_000
