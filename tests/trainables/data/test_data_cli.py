"""python -m trainables.data: a clear message and a non-zero exit for bad data, nothing written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, edit_json

from trainables.data.__main__ import main


def test_prepare_writes_parquet_and_manifest(sqa_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "prepared"
    assert main(["prepare", "--benchmark", "scienceqa", "--src", str(sqa_copy), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.parquet", "train.parquet", "val.parquet"]
    assert json.loads((out / "manifest.json").read_text())["counts"] == {"train": 12, "val": 6, "test": 6}
    capsys.readouterr()
    assert main(["show", "--prepared", str(out), "--split", "test", "-n", "1"]) == 0
    assert '"prompt": "Context: ' in capsys.readouterr().out


def test_bad_data_exits_non_zero_and_writes_nothing(sqa_copy: Path, tmp_path: Path) -> None:
    edit_json(sqa_copy / "problems.json", lambda d: d["6212"].update(answer=9))
    out = tmp_path / "prepared"
    res = subprocess.run([sys.executable, "-m", "trainables.data", "prepare", "--benchmark", "scienceqa",
                          "--src", str(sqa_copy), "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "problems.json" in res.stderr and "pid '6212'" in res.stderr and "field 'answer'" in res.stderr
    assert sorted(tmp_path.iterdir()) == [sqa_copy]  # no output folder, no temp folder


def test_unrecognised_data_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", "--benchmark", "iconqa", "--src", str(tmp_path)]) == 2
    assert "not a iconqa data root" in capsys.readouterr().err


def test_existing_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["prepare", "--benchmark", "sample-iconqa", "--out", str(tmp_path / "out")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
