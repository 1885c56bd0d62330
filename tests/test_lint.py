"""The tree passes ruff (configuration in pyproject.toml), so CI checks the style on every run."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_passes_on_the_tree():
    # ruff is in the test extras (pip install -e '.[test]'); without it this is a setup error.
    assert importlib.util.find_spec("ruff") is not None, "ruff missing: pip install -e '.[test]'"
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise",
                           str(REPO)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
