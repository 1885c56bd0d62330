"""Model selection and divergence in the epoch loop, with the epoch that wins chosen by the test.

The loop's own validation accuracies on a tiny model are whatever they are (the best epoch is
often the last one, which hides a loop that scores test with the last state). Here the
validation accuracy of each epoch is scripted, so the best epoch is known to lie strictly
before the last; the training and the test scoring are the real ones. Expected values are
computed from snapshots of the model taken during training, with the real scorer, not with
the loop's selection, restore or checkpoint code.
"""
from __future__ import annotations

import math

import pytest
import torch

from trainables import loop
from trainables.config import TrialConfig
from trainables.scoring import score_in_batches

SCRIPTED_VAL = {1: 0.5, 2: 0.75, 3: 0.25}  # epoch -> val accuracy: epoch 2 of 3 is best


def _cfg(tmp_path_factory, **over) -> TrialConfig:
    base = {"method": "both_lora", "sublayer": "all", "rank": 2, "llm": "tiny-t5",
            "benchmark": "synth-iconqa", "cache_dir": str(tmp_path_factory.getbasetemp() / "prepared"),
            "max_train_examples": 32, "max_eval_examples": 16, "seed": 5, "epochs": 3,
            "patience": 3, "lr": 3e-3}
    return TrialConfig.from_dict({**base, **over})


def _trained(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _test_scores(trial: loop.Trial, state: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(accuracy, mean gold-answer NLL) on test of the model holding ``state``, by hand."""
    with torch.no_grad():
        for n, p in trial.model.named_parameters():
            if p.requires_grad:
                p.copy_(state[n])
    problems = trial.splits["test"]
    result = score_in_batches(trial.model, problems, trial.vision.eval_inputs, trial.spec,
                              trial.precision, trial.cfg.eval_batch_size)
    hits = [pick == p.answer_index for pick, p in zip(result.predictions, problems)]
    gold = [row[p.answer_index] for row, p in zip(result.scores, problems)]
    return sum(hits) / len(problems), sum(gold) / len(problems)


def test_test_split_is_scored_with_the_best_validation_state(tmp_path_factory, monkeypatch):
    cfg = _cfg(tmp_path_factory)
    trial = loop.build_trial(cfg)
    real_evaluate, snapshots = loop.evaluate, {}

    def evaluate(t, split):
        acc, result = real_evaluate(t, split)
        if split != "val":
            return acc, result
        epoch = len(snapshots) + 1
        snapshots[epoch] = _trained(t.model)  # the state this epoch's validation scored
        return SCRIPTED_VAL[epoch], result

    monkeypatch.setattr(loop, "evaluate", evaluate)
    reports: list[dict] = []
    final = loop.run_trial(cfg, report=lambda m, _: reports.append(m), trial=trial)
    assert [r["val_acc"] for r in reports] == [0.5, 0.75, 0.25]
    assert (final["best_epoch"], final["best_val_acc"], final["done"]) == (2, 0.75, True)
    best_acc, best_nll = _test_scores(trial, snapshots[2])
    last_acc, last_nll = _test_scores(trial, snapshots[3])
    assert final["test_acc"] == best_acc
    assert final["test_gold_nll"] == pytest.approx(best_nll, rel=1e-6)
    # the last state scores differently: a loop that tested it would be caught
    assert abs(last_nll - best_nll) > 1e-3 * abs(best_nll), (last_nll, best_nll)


def test_a_finite_loss_blow_up_ends_the_trial_as_diverged(tmp_path_factory, monkeypatch):
    """Epoch 2's losses are finite but 1000x the first step's (factor 4): diverged, no test."""
    cfg = _cfg(tmp_path_factory, epochs=4)
    real_train_epoch = loop.train_epoch

    def train_epoch(t, optimizer, epoch):
        losses, samples = real_train_epoch(t, optimizer, epoch)
        return ([loss * 1000.0 for loss in losses] if epoch == 1 else losses), samples

    monkeypatch.setattr(loop, "train_epoch", train_epoch)
    reports: list[dict] = []
    final = loop.run_trial(cfg, report=lambda m, _: reports.append(m))
    assert [r["epoch"] for r in reports] == [1, 2] and reports[-1] is final
    assert math.isfinite(final["train_loss"]) and final["train_loss"] > 100 * reports[0]["train_loss"]
    assert final["diverged"] is True and final["done"] is True and reports[0]["diverged"] is False
    assert final["val_acc"] == 0.0 and final["best_val_acc"] == reports[0]["best_val_acc"]
    assert "test_acc" not in final and "best_epoch" not in final


def test_a_loss_just_below_the_factor_is_not_divergence(tmp_path_factory, monkeypatch):
    """The rule's boundary: every epoch's mean at 3.9x the first step's loss (factor 4) trains on."""
    cfg = _cfg(tmp_path_factory, epochs=2)
    monkeypatch.setattr(loop, "train_epoch", lambda t, o, e: ([1.0, 1.0] if e == 0 else [3.9, 3.9], 8))
    final = loop.run_trial(cfg, report=lambda m, _: None)
    assert final["diverged"] is False and final["done"] is True and final["train_loss"] == 3.9
    monkeypatch.setattr(loop, "train_epoch", lambda t, o, e: ([1.0] if e == 0 else [4.01], 8))
    assert loop.run_trial(cfg, report=lambda m, _: None)["diverged"] is True
