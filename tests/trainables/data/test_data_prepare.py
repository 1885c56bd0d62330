"""Official layout -> prepared Parquet -> records is lossless; preparing is once, atomic, reused."""
from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ASSETS

from trainables.data import prepare, sources
from trainables.data.errors import DataError
from trainables.data.iconqa import load_iconqa
from trainables.data.prepare import (
    atomic_prepare,
    cache_key,
    content_hash,
    ensure_prepared,
    read_manifest,
    read_records,
    read_split_table,
    write_prepared,
)
from trainables.data.prompts import build_prompt
from trainables.data.records import Record
from trainables.data.scienceqa import load_scienceqa
from trainables.data.sources import resolve_source
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


def _records() -> list[Record]:
    png = (ASSETS / "scienceqa" / "images" / "test" / "184" / "image.png").read_bytes()
    base = Record(pid="1", split="train", kind="scienceqa", question="Which?", choices=("a", "b"), answer_index=1,
                  hint="h", lecture="l", image=png, meta=(("subject", "natural science"), ("grade", "grade3")))
    return [base, dataclasses.replace(base, pid="2", split="val", choices=("a", "b", "c")),
            dataclasses.replace(base, pid="3", split="test"), dataclasses.replace(base, pid="4", split="test",
                                                                                  choices=("a", "b", "c", "d"))]


def test_every_prepared_column_is_what_the_model_is_given(tmp_path: Path) -> None:
    records = _records()  # their meta is not in key order: the meta column's JSON is
    write_prepared(records, tmp_path, benchmark="bench", source="src", source_hash="key")
    rows = [row for split in ("train", "val", "test")
            for row in pq.read_table(tmp_path / f"{split}.parquet").to_pylist()]
    assert [r["pid"] for r in rows] == ["1", "2", "3", "4"]
    codecs = {pq.ParquetFile(tmp_path / f"{split}.parquet").metadata.row_group(0).column(i).compression
              for split in ("train", "val", "test") for i in range(17)}
    assert codecs == {"ZSTD"}  # the image bytes make the cache big: compressed
    for rec, row in zip(records, rows):
        parts = build_prompt(rec)
        assert row == {"pid": rec.pid, "split": rec.split, "benchmark": "bench", "kind": "scienceqa",
                       "image": rec.image, "question": "Which?", "choices": list(rec.choices), "answer_index": 1,
                       "hint": "h", "lecture": "l", "context": parts.context, "prompt": parts.prompt,
                       "qformer_text": parts.qformer_text, "candidates": list(parts.candidates),
                       "target": parts.target, "meta": '{"grade": "grade3", "subject": "natural science"}',
                       "categories": ["NAT", "TXT", "IMG", "G1-6"]}  # natural science, a hint, an image, grade 3
    text = (tmp_path / "manifest.json").read_text()  # `python -m trainables.data` prints it: readable, stable
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert json.loads(text) == {
        "format_version": 2, "benchmark": "bench", "source": "src", "source_hash": "key",
        "content_hash": content_hash(records), "context_max_words": 120,
        "counts": {"train": 1, "val": 1, "test": 2},
        "chance": {"train": 0.5, "val": 1 / 3, "test": (1 / 2 + 1 / 4) / 2}}


def test_the_content_hash_covers_every_field_and_the_order() -> None:
    records = _records()
    first = content_hash(records)
    assert content_hash(_records()) == first and len(first) == 64
    changes = {"pid": "9", "split": "val", "kind": "iconqa", "question": "Which one?", "choices": ("a", "c"),
               "answer_index": 0, "hint": "", "lecture": "", "image": records[0].image + b"\0",
               "meta": (("grade", "grade4"),)}
    for field, value in changes.items():
        assert content_hash([dataclasses.replace(records[0], **{field: value}), *records[1:]]) != first, field
    assert content_hash(records[::-1]) != first


def test_prepared_records_need_unique_pids_and_every_split(tmp_path: Path) -> None:
    records = _records()
    with pytest.raises(DataError) as info:
        write_prepared([*records, records[2]], tmp_path, benchmark="b", source="src", source_hash="k")
    assert str(info.value) == "file src, pid '3', field 'pid': duplicate pid"
    with pytest.raises(DataError) as info:
        write_prepared(records[2:], tmp_path, benchmark="b", source="src", source_hash="k")
    assert str(info.value) == "file src: split(s) train, val have no problems; every benchmark needs train, val, test"
    assert list(tmp_path.iterdir()) == []


def test_reading_a_prepared_split_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        read_split_table(tmp_path, "validation")
    assert str(info.value) == "unknown split 'validation'; allowed: train, val, test"
    with pytest.raises(DataError) as info:
        read_split_table(tmp_path, "val")
    assert str(info.value) == \
        f"file {tmp_path / 'val.parquet'}: prepared split file is missing (run ensure_prepared / prepare first)"


def test_the_cache_key_changes_with_the_format_the_prompt_rules_and_the_source(monkeypatch) -> None:
    key = cache_key("source")
    assert cache_key("source") == key and cache_key("other") != key and len(key) == 64
    monkeypatch.setattr(prepare, "FORMAT_VERSION", 3)
    assert cache_key("source") != key
    monkeypatch.setattr(prepare, "FORMAT_VERSION", 2)
    monkeypatch.setattr(prepare, "CONTEXT_MAX_WORDS", 60)
    assert cache_key("source") != key


def test_a_cache_folder_holding_something_else_is_an_error_and_kept(tmp_path: Path) -> None:
    key = cache_key(resolve_source("sample-iconqa", None).fingerprint)
    foreign = tmp_path / f"sample-iconqa-{key[:12]}"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError) as info:
        ensure_prepared("sample-iconqa", cache_dir=tmp_path)
    assert str(info.value) == f"{foreign} exists but holds no prepared data for this source; remove it"
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    (foreign / "notes.txt").unlink()  # an empty folder (e.g. made by hand) is filled
    assert ensure_prepared("sample-iconqa", cache_dir=tmp_path) == foreign and (foreign / "manifest.json").is_file()


def test_a_failed_build_leaves_neither_the_folder_nor_a_temp_folder(tmp_path: Path) -> None:
    def build(tmp: Path) -> None:
        (tmp / "train.parquet").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_prepare(tmp_path / "cache" / "out", build)
    assert list((tmp_path / "cache").iterdir()) == []


def test_when_another_process_renamed_its_folder_first_ours_is_discarded(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    (out / "train.parquet").write_text("theirs")
    assert atomic_prepare(out, lambda tmp: (tmp / "train.parquet").write_text("ours")) == out
    assert (out / "train.parquet").read_text() == "theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (out / "manifest.json").unlink()  # a folder that is not a complete prepared one: the rename error stands
    with pytest.raises(OSError):
        atomic_prepare(out, lambda tmp: (tmp / "train.parquet").write_text("ours"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_records_are_read_from_their_own_columns_only(tmp_path: Path) -> None:
    out = ensure_prepared("sample-iconqa", cache_dir=tmp_path)
    records = read_records(out, "val")
    pq.write_table(pq.read_table(out / "val.parquet").drop(["prompt", "categories"]), out / "val.parquet")
    assert read_records(out, "val") == records  # the model's columns are not needed to rebuild a record
    assert read_split_table(out, "val", ["pid", "image"]).column_names == ["pid", "image"]  # only those asked


def test_a_current_folder_does_not_stop_the_others_being_prepared(tmp_path: Path) -> None:
    first = ensure_prepared("sample-iconqa", cache_dir=tmp_path)
    both = prepare.prepare_all([("sample-iconqa", None, tmp_path), ("sample-scienceqa", None, tmp_path)])
    assert both[0] == first and (both[1] / "manifest.json").is_file()


def _fake_sources(monkeypatch, records_of: dict[str, list[Record]], loads: list[str]) -> None:
    """`prepare_all` reads benchmarks through these Sources: each load is counted in `loads`."""
    def resolve(benchmark: str, data_root) -> sources.Source:
        def load() -> list[Record]:
            loads.append(benchmark)
            return records_of[benchmark]
        return sources.Source(benchmark, f"origin of {benchmark}", f"fingerprint of {benchmark}", load)
    monkeypatch.setattr(sources, "resolve_source", resolve)


def test_a_current_folder_is_reused_without_reading_the_source_again(tmp_path: Path, monkeypatch) -> None:
    loads: list[str] = []
    _fake_sources(monkeypatch, {"sample-scienceqa": _records()}, loads)
    first = ensure_prepared("sample-scienceqa", cache_dir=tmp_path)
    assert loads == ["sample-scienceqa"] and read_manifest(first)["source"] == "origin of sample-scienceqa"
    assert ensure_prepared("sample-scienceqa", cache_dir=tmp_path) == first
    assert loads == ["sample-scienceqa"]  # current: not read, validated or staged again


def test_preparing_names_the_source_of_a_bad_benchmark(tmp_path: Path, monkeypatch) -> None:
    records = _records()
    _fake_sources(monkeypatch, {"sample-scienceqa": [*records, records[3]],
                                "sample-iconqa": records[1:]}, [])
    with pytest.raises(DataError) as info:
        ensure_prepared("sample-scienceqa", cache_dir=tmp_path)
    assert str(info.value) == "file origin of sample-scienceqa, pid '4', field 'pid': duplicate pid"
    with pytest.raises(DataError) as info:
        ensure_prepared("sample-iconqa", cache_dir=tmp_path)
    assert str(info.value) == ("file origin of sample-iconqa: split(s) train have no problems; every "
                               "benchmark needs train, val, test")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_preparation_removes_only_the_folders_it_created(tmp_path: Path, monkeypatch) -> None:
    records = _records()
    _fake_sources(monkeypatch, {"sample-scienceqa": records, "sample-iconqa": records[1:]}, [])
    (tmp_path / "mine" / "empty").mkdir(parents=True)  # existed before: kept although empty
    cache = tmp_path / "mine" / "empty" / "cache" / "sub"
    with pytest.raises(DataError):  # the second fails after the first was staged in `cache`
        prepare.prepare_all([("sample-scienceqa", None, cache), ("sample-iconqa", None, cache)])
    assert [p.relative_to(tmp_path).as_posix() for p in sorted(tmp_path.rglob("*"))] == ["mine", "mine/empty"]


def test_a_prepared_split_without_a_column_it_needs_names_it(tmp_path: Path) -> None:
    write_prepared(_records(), tmp_path, benchmark="bench", source="src", source_hash="key")
    file = tmp_path / "val.parquet"
    pq.write_table(pq.read_table(file).drop(["prompt"]), file)
    with pytest.raises(DataError) as info:
        read_split_table(tmp_path, "val")
    assert str(info.value) == f"file {file}, field 'prompt': required column is missing"


def test_the_prepared_columns_have_fixed_types(tmp_path: Path) -> None:
    """Fixed, not inferred from the rows: readers (and a later format version) rely on them,
    e.g. a 32-bit answer index whatever the values."""
    write_prepared(_records(), tmp_path, benchmark="bench", source="src", source_hash="key")
    text, texts = "string", "list<element: string>"
    expected = [("pid", text), ("split", text), ("benchmark", text), ("kind", text), ("image", "binary"),
                ("question", text), ("choices", texts), ("answer_index", "int32"), ("hint", text),
                ("lecture", text), ("context", text), ("prompt", text), ("qformer_text", text),
                ("candidates", texts), ("target", text), ("meta", text), ("categories", texts)]
    for split in ("train", "val", "test"):
        schema = pq.read_schema(tmp_path / f"{split}.parquet")
        assert [(f.name, str(f.type)) for f in schema] == expected, split
