"""load_examples: what a trial consumes, from the prepared Parquet only."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from trainables.data.examples import load_examples
from trainables.data.images import decode_image
from trainables.data.prepare import ensure_prepared


def test_examples_match_the_prepared_rows(tmp_path: Path) -> None:
    out = ensure_prepared("sample-scienceqa", cache_dir=tmp_path)
    rows = pq.read_table(out / "val.parquet").to_pylist()
    exs = load_examples(out, "val", image_size=24)
    assert [e.pid for e in exs] == [r["pid"] for r in rows]
    for e, r in zip(exs, rows):
        assert e.prompt == r["prompt"] and e.qformer_text == r["qformer_text"]
        assert e.candidates == tuple(r["candidates"]) and e.answer_index == r["answer_index"]
        assert e.image.dtype == torch.uint8 and e.image.shape == (3, 24, 24)
        assert torch.equal(e.image, decode_image(r["image"], 24))


def test_limit_and_bad_arguments(tmp_path: Path) -> None:
    out = ensure_prepared("sample-iconqa", cache_dir=tmp_path)
    assert len(load_examples(out, "train", 16, limit=2)) == 2
    assert len(load_examples(out, "train", 16, limit=None)) == 5
    with pytest.raises(ValueError, match="unknown split"):
        load_examples(out, "dev", 16)
    with pytest.raises(ValueError, match="image_size"):
        load_examples(out, "train", 0)


def test_trials_do_not_need_the_raw_tree(sqa_copy: Path, tmp_path: Path) -> None:
    out = ensure_prepared("scienceqa", data_root=sqa_copy, cache_dir=tmp_path / "cache")
    for p in sorted(sqa_copy.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    assert len(load_examples(out, "train", 16)) == 12
