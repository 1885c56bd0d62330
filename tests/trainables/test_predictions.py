"""Per-problem predictions: metrics by hand, the artifact of a finished and of a stopped trial,
ScienceQA categories on the shipped real sample against a hand count."""
from __future__ import annotations

import math
import shutil

import pyarrow.compute as pc
import pytest

from trainables.checkpoint import load_checkpoint, load_trainable_state
from trainables.config import TrialConfig
from trainables.data.prepare import ensure_prepared, read_split_table
from trainables.loop import build_trial, evaluate, run_trial
from trainables.predictions import (
    FILE_NAME,
    SplitScores,
    category_accuracy,
    category_metrics,
    predictions_table,
    read_predictions,
)
from trainables.rescore import score_stopped

# The shipped sample's categories, counted by hand from trainables/assets/data/scienceqa/
# problems.json (subject, grade, hint of each pid; every problem has an image):
SAMPLE_CATEGORIES = {
    "val": {"184": ("NAT", "TXT", "IMG", "G1-6"), "2391": ("TXT", "IMG"), "8454": ("IMG",),
            "6786": ("TXT", "IMG"), "78": ("NAT", "TXT", "IMG", "G1-6"),
            "209": ("NAT", "TXT", "IMG", "G7-12")},
    "test": {"19756": ("TXT", "IMG"), "158": ("NAT", "IMG", "G1-6"), "17790": ("TXT", "IMG"),
             "161": ("NAT", "TXT", "IMG", "G1-6"), "11690": ("TXT", "IMG"),
             "46": ("NAT", "TXT", "IMG", "G1-6")},
}


def test_split_scores_metrics_by_hand():
    s = SplitScores("val", ("a", "b"), (0, 1), (0, 0), ((1.0, 2.0), (0.5, 3.0, 4.0)))
    assert s.correct == [True, False] and s.accuracy() == 0.5
    assert s.gold_nll() == pytest.approx((1.0 + 3.0) / 2)
    # -log softmax(-s)[gold]: a: 1 + log(e^-1 + e^-2); b: 3 + log(e^-0.5 + e^-3 + e^-4)
    a = 1.0 + math.log(math.exp(-1.0) + math.exp(-2.0))
    b = 3.0 + math.log(math.exp(-0.5) + math.exp(-3.0) + math.exp(-4.0))
    assert s.choice_nll() == pytest.approx((a + b) / 2)
    with pytest.raises(ValueError, match="line up"):
        SplitScores("val", ("a",), (0, 1), (0,), ((1.0, 2.0),))


def test_prepared_sample_scienceqa_carries_the_hand_counted_categories(tmp_path):
    prepared = ensure_prepared("sample-scienceqa", cache_dir=tmp_path)
    for split, expected in SAMPLE_CATEGORIES.items():
        cols = read_split_table(prepared, split, ["pid", "categories"]).to_pydict()
        assert dict(zip(cols["pid"], map(tuple, cols["categories"]))) == expected
    iconqa = ensure_prepared("sample-iconqa", cache_dir=tmp_path)
    assert all(c == [] for c in read_split_table(iconqa, "test", ["categories"])["categories"].to_pylist())


def test_category_accuracy_on_the_sample_matches_a_hand_count():
    test = SAMPLE_CATEGORIES["test"]
    pids = tuple(test)
    # right on 19756, 158, 46; wrong on 17790, 161, 11690. By hand: NAT {158 ok, 161 x, 46 ok}
    # = 2/3; TXT {19756 ok, 17790 x, 161 x, 11690 x, 46 ok} = 2/5; IMG 3/6; G1-6 = NAT = 2/3.
    right = {"19756", "158", "46"}
    picked = tuple(0 if p in right else 1 for p in pids)
    scores = SplitScores("test", pids, (0,) * 6, picked, tuple((0.0, 1.0) for _ in pids))
    table = predictions_table([scores], test)
    assert category_accuracy(table) == pytest.approx({"NAT": 2 / 3, "TXT": 2 / 5, "IMG": 0.5,
                                                      "G1-6": 2 / 3})
    assert list(category_metrics(table)) == ["test_acc/NAT", "test_acc/TXT", "test_acc/IMG",
                                             "test_acc/G1-6"]


def _config(tmp_path, epochs: int) -> TrialConfig:
    return TrialConfig.from_dict({
        "method": "qformer_lora", "sublayer": "all", "rank": 1, "llm": "tiny-t5",
        "benchmark": "sample-scienceqa", "epochs": epochs, "cache_dir": str(tmp_path / "prep"),
        "max_train_examples": 8, "seed": 3})


def test_finished_trial_writes_predictions_and_category_metrics(tmp_path):
    cfg = _config(tmp_path, epochs=2)
    reports, kept = [], tmp_path / "kept"

    def report(metrics, ckpt):
        reports.append(metrics)
        shutil.copytree(ckpt, kept / str(metrics["epoch"]))

    run_trial(cfg, report=report)
    assert all("val_gold_nll" in r and "val_choice_nll" in r for r in reports)
    assert FILE_NAME not in {p.name for p in (kept / "1").iterdir()}  # only the final checkpoint
    table = read_predictions(kept / "2" / FILE_NAME)
    final = reports[-1]
    val = table.filter(pc.equal(table["split"], "val")).to_pydict()
    test = table.filter(pc.equal(table["split"], "test")).to_pydict()
    assert set(test["pid"]) == set(SAMPLE_CATEGORIES["test"]) and len(val["pid"]) == 6
    assert sum(test["correct"]) / 6 == final["test_acc"]
    assert sum(val["correct"]) / 6 == final["best_val_acc"]  # val rows from the best epoch
    assert {k: v for k, v in final.items() if k.startswith("test_acc/")} == category_metrics(table)
    assert "test_acc/NAT" in final and "test_acc/SOC" not in final


def test_stopped_trial_is_rescored_from_its_checkpoint(tmp_path):
    cfg = _config(tmp_path, epochs=3)
    reports, kept = [], tmp_path / "kept"

    def report(metrics, ckpt):
        reports.append(metrics)
        shutil.copytree(ckpt, kept / str(metrics["epoch"]))

    run_trial(cfg, report=report)
    got = score_stopped(cfg.to_dict(), kept / "2", tmp_path / "out")
    # Reference: the best state of epoch 2 scored with the trial's own evaluate().
    trial = build_trial(cfg)
    state, best = load_checkpoint(kept / "2", trial.model, None)
    load_trainable_state(trial.model, best)
    assert got["test_acc"] == evaluate(trial, "test")[0]
    assert got["best_epoch"] == state["best_epoch"] <= 2
    assert got["best_val_acc"] == reports[1]["best_val_acc"]
    table = read_predictions(tmp_path / "out" / FILE_NAME)
    val = [ok for ok, s in zip(table["correct"].to_pylist(), table["split"].to_pylist()) if s == "val"]
    assert sum(val) / len(val) == reports[1]["best_val_acc"]
    with pytest.raises(ValueError, match="finished trial"):
        score_stopped(cfg.to_dict(), kept / "3", tmp_path / "out")
