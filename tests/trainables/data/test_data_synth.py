"""The embedded synthetic benchmarks: deterministic, in the official layouts, and answerable from
the image (and, for the ScienceQA-like one, the context) at the tiny models' resolution."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from trainables.data.examples import load_examples
from trainables.data.images import decode_image
from trainables.data.prepare import ensure_prepared, read_records
from trainables.data.synth import COLOURS, write_synth
from trainables.defaults import SYNTH_SEED, SYNTH_SPLIT_SIZES

SIDE = 32  # what the tiny presets see


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("benchmark", ["synth-scienceqa", "synth-iconqa"])
def test_same_seed_gives_byte_identical_files(benchmark: str, tmp_path: Path) -> None:
    a = write_synth(benchmark, tmp_path / "a", SYNTH_SEED, SYNTH_SPLIT_SIZES)
    b = write_synth(benchmark, tmp_path / "b", SYNTH_SEED, SYNTH_SPLIT_SIZES)
    c = write_synth(benchmark, tmp_path / "c", SYNTH_SEED + 1, SYNTH_SPLIT_SIZES)
    assert _files(a) == _files(b)
    assert _files(a) != _files(c)


def test_written_in_the_official_layouts(tmp_path: Path) -> None:
    sqa = write_synth("synth-scienceqa", tmp_path / "s", SYNTH_SEED, {"train": 2, "val": 1, "test": 1})
    assert (sqa / "problems.json").is_file() and (sqa / "images" / "val" / "3" / "image.png").is_file()
    icon = write_synth("synth-iconqa", tmp_path / "i", SYNTH_SEED, {"train": 2, "val": 1, "test": 1})
    assert (icon / "iconqa_data" / "iconqa" / "test" / "choose_txt" / "4" / "data.json").is_file()


def _colour_mask(img: np.ndarray, name: str) -> np.ndarray:
    """Pixels within a tolerance of a palette colour (img is (3, S, S) uint8)."""
    ref = np.array(COLOURS[name], dtype=np.int32)[:, None, None]
    return np.abs(img.astype(np.int32) - ref).max(axis=0) < 60


def _oracle(question: str, context: str, img: np.ndarray, choices: list[str]) -> str:
    """Answers from pixels and text alone, to show the label is a function of what the model sees."""
    present = {c: int(_colour_mask(img, c).sum()) for c in COLOURS}
    if question.startswith("What color"):
        return max(present, key=present.get)
    if question.startswith("Is the heavier"):
        heavy = re.match(r"The (\w+) object is heavier", context).group(1)
        return "top" if np.nonzero(_colour_mask(img, heavy))[0].mean() < SIDE / 2 else "bottom"
    if question.startswith("Is the"):
        ys = np.nonzero(_colour_mask(img, question.split()[2]))[0]
        return "top" if ys.mean() < SIDE / 2 else "bottom"
    if question.startswith("What does"):
        yes = re.search(r"a (\w+) shape means yes", context).group(1)
        return "yes" if present[yes] > 0 else "no"
    if question.startswith("How many"):
        ink = (img.astype(np.int32).min(axis=0) < 200)
        half = SIDE // 2
        quadrants = [ink[:half, :half], ink[:half, half:], ink[half:, :half], ink[half:, half:]]
        return str(sum(int(q.sum() > 4) for q in quadrants))
    # Which shape: fill ratio of the bounding box (square ~1, circle ~0.8, triangle ~0.5).
    ys, xs = np.nonzero(img.astype(np.int32).min(axis=0) < 200)
    fill = len(xs) / ((np.ptp(xs) + 1) * (np.ptp(ys) + 1))
    return "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"


@pytest.mark.parametrize("benchmark", ["synth-scienceqa", "synth-iconqa"])
def test_answers_follow_from_image_and_context(benchmark: str, tmp_path: Path) -> None:
    out = ensure_prepared(benchmark, cache_dir=tmp_path)
    recs = read_records(out, "train")
    right = 0
    for rec in recs:
        img = decode_image(rec.image, SIDE).numpy()
        truth = rec.choices[rec.answer_index]
        right += _oracle(rec.question, rec.hint, img, list(rec.choices)) == truth
        # Training flips images horizontally: no answer may depend on left/right.
        right += _oracle(rec.question, rec.hint, img[:, :, ::-1], list(rec.choices)) == truth
    assert right == 2 * len(recs), right / (2 * len(recs))


def test_options_and_chance(tmp_path: Path) -> None:
    out = ensure_prepared("synth-scienceqa", cache_dir=tmp_path)
    recs = read_records(out, "train")
    assert {len(r.choices) for r in recs} == {2, 3, 4, 5}
    assert any(r.hint and not r.lecture for r in recs) and any(r.lecture for r in recs)
    assert any(not r.hint for r in recs)
    counts = np.bincount([r.answer_index for r in recs if len(r.choices) == 2])
    assert counts.min() > 0.25 * counts.sum()  # the answer's position is not a shortcut
    assert load_examples(out, "train", SIDE, limit=4)[0].image.shape == (3, SIDE, SIDE)
