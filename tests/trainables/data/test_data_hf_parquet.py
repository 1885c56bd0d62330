"""A parquet written by the `datasets` library in the hub schema loads to the same records as the
official layout of the same problems (pyarrow reads it; `datasets` is only used to write it)."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ASSETS

from trainables.data.hf_parquet import load_hf_scienceqa
from trainables.data.prepare import ensure_prepared, read_records
from trainables.data.records import Record
from trainables.data.scienceqa import load_scienceqa

datasets = pytest.importorskip("datasets")
HUB_SPLIT = {"train": "train", "val": "validation", "test": "test"}


def _features():
    v = datasets.Value
    text = {k: v("string") for k in ("hint", "task", "grade", "subject", "topic", "category", "skill",
                                     "lecture", "solution")}
    return datasets.Features({"image": datasets.Image(), "question": v("string"),
                              "choices": datasets.Sequence(v("string")), "answer": v("int8"), **text})


def write_hub_export(records: list[Record], root: Path, with_paths: bool) -> None:
    """One `data/<split>-00000-of-00001.parquet` per split, as the hub export is laid out; a
    text-only problem (no image) is added to show it is skipped."""
    for split, hub in HUB_SPLIT.items():
        part = [r for r in records if r.split == split]
        rows = {name: [] for name in _features()}
        for r in part + [None]:
            meta = dict(r.meta) if r else {}
            path = f"images/{split}/{r.pid}/image.png" if r is not None and with_paths else None
            image = None if r is None else {"bytes": r.image, "path": path}
            row = {"image": image, "question": r.question if r else "Text only?",
                   "choices": list(r.choices) if r else ["a", "b"], "answer": r.answer_index if r else 0,
                   "hint": r.hint if r else "", "lecture": r.lecture if r else "",
                   **{k: meta.get(k, "") for k in ("task", "grade", "subject", "topic", "category",
                                                   "skill", "solution")}}
            for k, val in row.items():
                rows[k].append(val)
        datasets.Dataset.from_dict(rows, features=_features()).to_parquet(
            str(root / "data" / f"{hub}-00000-of-00001.parquet"))


@pytest.fixture(scope="module")
def official() -> list[Record]:
    return load_scienceqa(ASSETS / "scienceqa")


def test_hub_parquet_loads_to_the_official_records(official: list[Record], tmp_path: Path) -> None:
    write_hub_export(official, tmp_path, with_paths=True)
    assert sorted(load_hf_scienceqa(tmp_path), key=lambda r: r.pid) == sorted(official, key=lambda r: r.pid)


def test_without_image_paths_pids_are_positional(official: list[Record], tmp_path: Path) -> None:
    write_hub_export(official, tmp_path, with_paths=False)
    loaded = load_hf_scienceqa(tmp_path)
    val = [r for r in official if r.split == "val"]
    assert [r.pid for r in loaded if r.split == "val"] == [f"val-{i}" for i in range(len(val))]
    strip = lambda rs: [r.__class__(**{**r.__dict__, "pid": ""}) for r in rs]  # noqa: E731
    assert strip(loaded) == strip(official)


def test_hub_parquet_prepares_like_the_official_layout(official: list[Record], tmp_path: Path) -> None:
    write_hub_export(official, tmp_path / "hub", with_paths=True)
    out = ensure_prepared("scienceqa", data_root=tmp_path / "hub", cache_dir=tmp_path / "cache")
    ref = ensure_prepared("sample-scienceqa", cache_dir=tmp_path / "cache")
    for split in ("train", "val", "test"):
        assert sorted(read_records(out, split), key=lambda r: r.pid) == \
            sorted(read_records(ref, split), key=lambda r: r.pid)
