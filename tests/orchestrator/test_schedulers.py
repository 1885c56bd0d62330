"""Grouped ASHA: stop decisions compare trials of the same (benchmark, llm) group only."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from orchestrator.driver.schedulers import GroupedASHA, asha_defaults, make_scheduler


@dataclass
class FakeTrial:
    trial_id: str
    config: dict = field(default_factory=dict)


def trial(tid: str, benchmark: str, llm: str = "tiny-t5") -> FakeTrial:
    return FakeTrial(tid, {"benchmark": benchmark, "llm": llm, "method": "llm_lora"})


def report(sched, t, epoch, acc, loss=1.0):
    return sched.on_trial_result(None, t, {"epoch": epoch, "best_val_acc": acc, "train_loss": loss})


def test_iconqa_trial_is_never_stopped_by_scienceqa_results():
    sched = GroupedASHA(max_t=8, grace_period=1, reduction_factor=4)
    sqa = [trial(f"s{i}", "synth-scienceqa") for i in range(8)]
    icon = trial("i0", "synth-iconqa")
    for t in sqa + [icon]:
        sched.on_trial_add(None, t)
    for i, t in enumerate(sqa):  # strong ScienceQA trials: 0.80 .. 0.87
        assert report(sched, t, 1, 0.80 + i / 100) == TrialScheduler.CONTINUE
    # 0.30 would be far below the ScienceQA cutoff, but it is the only IconQA trial.
    assert report(sched, icon, 1, 0.30) == TrialScheduler.CONTINUE
    assert report(sched, icon, 4, 0.35) == TrialScheduler.CONTINUE
    assert set(sched.groups) == {("synth-scienceqa", "tiny-t5"), ("synth-iconqa", "tiny-t5")}


def test_weak_trial_is_stopped_within_its_group():
    sched = GroupedASHA(max_t=8, grace_period=1, reduction_factor=4)
    strong = [trial(f"i{i}", "synth-iconqa") for i in range(4)]
    weak = trial("weak", "synth-iconqa")
    for t in strong + [weak]:
        sched.on_trial_add(None, t)
    for i, t in enumerate(strong):
        report(sched, t, 1, 0.60 + i / 100)
    assert report(sched, weak, 1, 0.30) == TrialScheduler.STOP


def test_same_benchmark_other_llm_is_another_group():
    sched = GroupedASHA(max_t=8, grace_period=1, reduction_factor=4)
    t5 = [trial(f"t{i}", "synth-iconqa", "tiny-t5") for i in range(4)]
    llama = trial("l0", "synth-iconqa", "tiny-llama")
    for t in t5 + [llama]:
        sched.on_trial_add(None, t)
    for t in t5:
        report(sched, t, 1, 0.9)
    assert report(sched, llama, 1, 0.1) == TrialScheduler.CONTINUE


def test_final_report_at_max_t_is_not_cut_off():
    sched = GroupedASHA(max_t=4, grace_period=1, reduction_factor=4)
    t = trial("a", "synth-iconqa")
    sched.on_trial_add(None, t)
    for epoch in range(1, 5):
        assert report(sched, t, epoch, 0.5) == TrialScheduler.CONTINUE
    sched.on_trial_complete(None, t, {"epoch": 4, "best_val_acc": 0.5})


@pytest.mark.parametrize("epochs,grace", [(1, 1), (8, 1), (15, 1), (16, 2), (30, 3)])
def test_defaults_derive_from_the_epoch_budget(epochs, grace):
    assert asha_defaults(epochs) == (grace, 4)


def test_make_scheduler():
    assert isinstance(make_scheduler("fifo", 8), FIFOScheduler)
    assert not isinstance(make_scheduler("fifo", 8), GroupedASHA)
    sched = make_scheduler("asha", 8, grace_period=2, reduction_factor=3)
    assert sched._asha_kwargs["grace_period"] == 2 and sched._asha_kwargs["reduction_factor"] == 3
    with pytest.raises(ValueError, match="grace_period"):
        make_scheduler("asha", 4, grace_period=5)
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("pbt", 4)


def test_ties_in_accuracy_are_broken_by_training_loss():
    sched = GroupedASHA(max_t=8, grace_period=1, reduction_factor=4)
    trials = [trial(f"i{i}", "synth-iconqa") for i in range(5)]
    for t in trials:
        sched.on_trial_add(None, t)
    for i, t in enumerate(trials[:4]):  # all at 0.5, losses 1.0 .. 1.3
        report(sched, t, 1, 0.5, loss=1.0 + i / 10)
    assert report(sched, trials[4], 1, 0.5, loss=2.0) == TrialScheduler.STOP  # tied, worse loss
    late = trial("late", "synth-iconqa")
    sched.on_trial_add(None, late)
    assert report(sched, late, 1, 0.5, loss=0.5) == TrialScheduler.CONTINUE  # tied, best loss


def test_tie_break_never_reorders_different_accuracies():
    sched = GroupedASHA(max_t=8, grace_period=1, reduction_factor=4)
    low = sched.scored({"best_val_acc": 0.50, "train_loss": 0.0})["rung_score"]
    high = sched.scored({"best_val_acc": 0.51, "train_loss": float("nan")})["rung_score"]
    assert high > low
    assert sched.scored({"epoch": 1}) == {"epoch": 1}
