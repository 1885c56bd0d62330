"""Fixtures of the data-layer tests: the shipped samples (always present) and writable copies of
them for corruption tests. The real sample (fixture ``shared``) is in tests/conftest.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ASSETS = REPO / "trainables" / "assets" / "data"


@pytest.fixture
def sqa_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped ScienceQA sample."""
    dst = tmp_path / "scienceqa"
    shutil.copytree(ASSETS / "scienceqa", dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


@pytest.fixture
def iconqa_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped IconQA sample."""
    dst = tmp_path / "iconqa"
    shutil.copytree(ASSETS / "iconqa", dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def edit_json(path: Path, change) -> None:
    """Load a JSON file, let `change` mutate it, write it back."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
