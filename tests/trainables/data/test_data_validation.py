"""Every kind of bad input is one DataError naming file, pid and field, before any training."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import edit_json

from trainables.data.errors import DataError
from trainables.data.hf_parquet import load_hf_scienceqa
from trainables.data.iconqa import load_iconqa
from trainables.data.prepare import ensure_prepared, prepare_all, read_split_table
from trainables.data.scienceqa import load_scienceqa


def _fails(load, root: Path, *needles: str) -> str:
    with pytest.raises(DataError) as info:
        load(root)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_missing_image_of_an_img_record(shared: Path) -> None:
    _fails(load_scienceqa, shared / "scienceqa_schema_sample", "problems.json", "pid '1'", "'image'", "missing")


def test_answer_out_of_range(sqa_copy: Path) -> None:
    edit_json(sqa_copy / "problems.json", lambda d: d["42"].update(answer=5))
    _fails(load_scienceqa, sqa_copy, "pid '42'", "field 'answer'", "out of range")


@pytest.mark.parametrize("choices", [[], ["only"]])
def test_empty_or_single_choices(sqa_copy: Path, choices: list[str]) -> None:
    edit_json(sqa_copy / "problems.json", lambda d: d["86"].update(choices=choices))
    _fails(load_scienceqa, sqa_copy, "pid '86'", "field 'choices'")


def test_duplicate_pid_in_problems_json(sqa_copy: Path) -> None:
    f = sqa_copy / "problems.json"
    text = f.read_text()
    f.write_text(text.rstrip().rstrip("}") + ', "42": {"question": "x"}}')
    _fails(load_scienceqa, sqa_copy, "problems.json", "pid '42'", "duplicate")


def test_duplicate_pid_across_splits(sqa_copy: Path) -> None:
    edit_json(sqa_copy / "pid_splits.json", lambda d: d["test"].append(d["train"][0]))
    _fails(load_scienceqa, sqa_copy, "pid_splits.json", "duplicate pid")


@pytest.mark.parametrize("text", ["{not json", '{"42": {"question": "trunc'])
def test_invalid_or_truncated_json(sqa_copy: Path, text: str) -> None:
    (sqa_copy / "problems.json").write_text(text)
    _fails(load_scienceqa, sqa_copy, "problems.json", "invalid or truncated JSON")


def test_image_path_escaping_the_root(sqa_copy: Path) -> None:
    edit_json(sqa_copy / "problems.json", lambda d: d["61"].update(image="../../../../../etc/passwd"))
    _fails(load_scienceqa, sqa_copy, "pid '61'", "field 'image'", "escapes the data root")


def test_iconqa_split_escaping_the_root(iconqa_copy: Path) -> None:
    edit_json(iconqa_copy / "iconqa_data" / "problems.json", lambda d: d["7"].update(split="../../.."))
    _fails(load_iconqa, iconqa_copy, "pid '7'", "escapes the data root")


def test_corrupt_png(sqa_copy: Path) -> None:
    img = sqa_copy / "images" / "test" / "184" / "image.png"
    img.write_bytes(img.read_bytes()[:200])  # truncated
    _fails(load_scienceqa, sqa_copy, f"file {sqa_copy / 'problems.json'}", "pid '184'", "field 'image'",
           "cannot be decoded (OSError: ")  # PIL's error for a truncated file, by type


def test_pid_in_splits_absent_from_problems(iconqa_copy: Path) -> None:
    edit_json(iconqa_copy / "iconqa_data" / "pid_splits.json", lambda d: d["choose_txt_val"].append("999999"))
    _fails(load_iconqa, iconqa_copy, "pid_splits.json", "pid '999999'", "absent from problems.json")


def test_hub_parquet_missing_a_required_column(tmp_path: Path) -> None:
    import pyarrow as pa
    pq.write_table(pa.table({"question": ["q"], "choices": [["a", "b"]], "answer": [0]}),
                   tmp_path / "train-00000-of-00001.parquet")
    _fails(load_hf_scienceqa, tmp_path, "train-00000-of-00001.parquet", "field 'image'", "required column")


def test_prepared_parquet_missing_a_required_column(tmp_path: Path) -> None:
    out = ensure_prepared("sample-iconqa", cache_dir=tmp_path)
    table = pq.read_table(out / "val.parquet").drop(["prompt"])
    pq.write_table(table, out / "val.parquet")
    with pytest.raises(DataError, match="val.parquet.*field 'prompt'"):
        read_split_table(out, "val")


def test_bad_data_leaves_no_prepared_folder(sqa_copy: Path, tmp_path: Path) -> None:
    edit_json(sqa_copy / "problems.json", lambda d: d["42"].update(answer=-1))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="pid '42'"):
        ensure_prepared("scienceqa", data_root=sqa_copy, cache_dir=cache)
    assert not cache.exists() or list(cache.iterdir()) == []  # not even a temp folder is left


def test_a_bad_benchmark_leaves_no_trace_of_a_good_one(sqa_copy: Path, tmp_path: Path) -> None:
    edit_json(sqa_copy / "problems.json", lambda d: d["42"].update(answer=-1))
    fresh = tmp_path / "a" / "b" / "cache"  # three folders prepare_all would create
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "note.txt").write_text("mine")
    with pytest.raises(DataError, match="pid '42'"):
        prepare_all([("sample-iconqa", None, fresh), ("sample-iconqa", None, kept),
                     ("scienceqa", sqa_copy, fresh)])
    assert not (tmp_path / "a").exists()
    assert [p.name for p in kept.iterdir()] == ["note.txt"]  # a folder it did not create stays
    good = prepare_all([("sample-iconqa", None, fresh)])
    assert good[0].parent == fresh and (good[0] / "manifest.json").is_file()
