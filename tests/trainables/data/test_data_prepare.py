"""Official layout -> prepared Parquet -> records is lossless; preparing is once, atomic, reused."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow.parquet as pq
from conftest import ASSETS

from trainables.data.iconqa import load_iconqa
from trainables.data.prepare import ensure_prepared, read_manifest, read_records
from trainables.data.scienceqa import load_scienceqa
from trainables.defaults import SYNTH_SPLIT_SIZES


def _roundtrip(records, out: Path) -> None:
    for split in ("train", "val", "test"):
        expected = [r for r in records if r.split == split]
        got = read_records(out, split)
        assert got == expected  # every field, image bytes included, in order


def test_scienceqa_roundtrip_is_lossless(tmp_path: Path) -> None:
    out = ensure_prepared("sample-scienceqa", cache_dir=tmp_path)
    _roundtrip(load_scienceqa(ASSETS / "scienceqa"), out)


def test_iconqa_roundtrip_is_lossless(tmp_path: Path) -> None:
    out = ensure_prepared("sample-iconqa", cache_dir=tmp_path)
    _roundtrip(load_iconqa(ASSETS / "iconqa"), out)


def test_shared_scienceqa_roundtrip(shared: Path, tmp_path: Path) -> None:
    out = ensure_prepared("scienceqa", data_root=shared / "scienceqa", cache_dir=tmp_path)
    _roundtrip(load_scienceqa(shared / "scienceqa"), out)
    assert read_manifest(out)["counts"] == {"train": 280, "val": 60, "test": 60}


def test_prepared_rows_show_what_the_model_gets(tmp_path: Path) -> None:
    out = ensure_prepared("sample-scienceqa", cache_dir=tmp_path)
    row = pq.read_table(out / "train.parquet").to_pylist()[0]
    for col in ("pid", "split", "benchmark", "image", "question", "choices", "answer_index", "context",
                "prompt", "qformer_text", "candidates", "target"):
        assert col in row
    assert row["benchmark"] == "sample-scienceqa" and row["image"][:8] == b"\x89PNG\r\n\x1a\n"
    assert row["target"] == row["candidates"][row["answer_index"]]
    assert row["prompt"].startswith("Context: ") and row["prompt"].endswith(". Answer:")


def test_manifest_counts_chance_and_hash(tmp_path: Path) -> None:
    out = ensure_prepared("synth-iconqa", cache_dir=tmp_path)
    m = read_manifest(out)
    assert m["counts"] == SYNTH_SPLIT_SIZES
    rows = pq.read_table(out / "val.parquet", columns=["choices"]).to_pylist()
    assert abs(m["chance"]["val"] - sum(1 / len(r["choices"]) for r in rows) / len(rows)) < 1e-12
    assert out.name == f"synth-iconqa-{m['source_hash'][:12]}" and len(m["content_hash"]) == 64


def test_reused_while_hash_matches_and_redone_when_source_changes(sqa_copy: Path, tmp_path: Path) -> None:
    first = ensure_prepared("scienceqa", data_root=sqa_copy, cache_dir=tmp_path)
    stamp = (first / "train.parquet").stat().st_mtime_ns
    assert ensure_prepared("scienceqa", data_root=sqa_copy, cache_dir=tmp_path) == first
    assert (first / "train.parquet").stat().st_mtime_ns == stamp  # not rewritten
    data = json.loads((sqa_copy / "problems.json").read_text())
    data["42"]["question"] = "Changed?"
    (sqa_copy / "problems.json").write_text(json.dumps(data))
    second = ensure_prepared("scienceqa", data_root=sqa_copy, cache_dir=tmp_path)
    assert second != first
    assert [r.question for r in read_records(second, "train") if r.pid == "42"] == ["Changed?"]


def test_concurrent_first_use_gives_one_complete_folder(tmp_path: Path) -> None:
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_prepared("sample-iconqa", cache_dir=tmp_path)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [results[0].name]  # no temp folders left
    assert read_manifest(results[0])["counts"]["train"] == 5
