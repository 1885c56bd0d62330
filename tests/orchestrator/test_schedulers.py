"""Grouped ASHA: stop decisions compare trials of the same (benchmark, llm) group only."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import pytest
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from orchestrator.driver.schedulers import (
    AshaSettings,
    GroupedASHA,
    asha_settings,
    make_scheduler,
    trial_key,
)
from trainables import defaults


@dataclass
class FakeTrial:
    trial_id: str
    config: dict = field(default_factory=dict)


def trial(tid: str, benchmark: str, llm: str = "tiny-t5") -> FakeTrial:
    return FakeTrial(tid, {"benchmark": benchmark, "llm": llm, "method": "llm_lora"})


def added_cells(sched, n: int) -> list[FakeTrial]:
    """n llm_lora cells of one group (ranks 0..n-1), added to ``sched`` in order."""
    trials = [FakeTrial(f"x{i}", {"benchmark": "synth-iconqa", "llm": "tiny-t5",
                                  "method": "llm_lora", "rank": i}) for i in range(n)]
    for t in trials:
        sched.on_trial_add(None, t)
    return trials


def report(sched, t, epoch, acc, loss=1.0):
    return sched.on_trial_result(None, t, {"epoch": epoch, "best_val_acc": acc, "train_loss": loss})


def test_iconqa_trial_is_never_stopped_by_scienceqa_results():
    sched = GroupedASHA(AshaSettings(max_t=8, grace_period=1, reduction_factor=4))
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
    sched = GroupedASHA(AshaSettings(max_t=8, grace_period=1, reduction_factor=4))
    strong = [trial(f"i{i}", "synth-iconqa") for i in range(4)]
    weak = trial("weak", "synth-iconqa")
    for t in strong + [weak]:
        sched.on_trial_add(None, t)
    for i, t in enumerate(strong):
        report(sched, t, 1, 0.60 + i / 100)
    assert report(sched, weak, 1, 0.30) == TrialScheduler.STOP


def test_same_benchmark_other_llm_is_another_group():
    sched = GroupedASHA(AshaSettings(max_t=8, grace_period=1, reduction_factor=4))
    t5 = [trial(f"t{i}", "synth-iconqa", "tiny-t5") for i in range(4)]
    llama = trial("l0", "synth-iconqa", "tiny-llama")
    for t in t5 + [llama]:
        sched.on_trial_add(None, t)
    for t in t5:
        report(sched, t, 1, 0.9)
    assert report(sched, llama, 1, 0.1) == TrialScheduler.CONTINUE


def test_final_report_at_max_t_is_not_cut_off():
    sched = GroupedASHA(AshaSettings(max_t=4, grace_period=1, reduction_factor=4))
    t = trial("a", "synth-iconqa")
    sched.on_trial_add(None, t)
    for epoch in range(1, 5):
        assert report(sched, t, epoch, 0.5) == TrialScheduler.CONTINUE
    sched.on_trial_complete(None, t, {"epoch": 4, "best_val_acc": 0.5})


def test_settings_come_from_the_recipe_unless_overridden():
    tiny, paper = defaults.asha_defaults("tiny-t5"), defaults.asha_defaults("flan-t5-xl")
    # one value object: the recipe's defaults at the recipe's budget are what the sweep runs
    assert asha_settings(defaults.TINY.epochs, "tiny-t5") == tiny == defaults.TINY_ASHA
    assert asha_settings(15, "flan-t5-xl") == paper == defaults.PAPER_ASHA
    s = asha_settings(6, "tiny-t5")
    assert (s.max_t, s.grace_period, s.reduction_factor, s.metric) == \
        (6, tiny.grace_period, tiny.reduction_factor, tiny.metric)
    assert asha_settings(15, "flan-t5-xl").grace_period == paper.grace_period
    assert asha_settings(1, "flan-t5-xl").grace_period == 1  # capped at a 1-epoch budget
    # overrides unlike the recipe's own values, each one, so an ignored override shows
    overrides = {"grace_period": 2, "reduction_factor": 4, "metric": "best_val_acc"}
    assert all(getattr(tiny, k) != v for k, v in overrides.items())
    s = asha_settings(8, "tiny-t5", **overrides)
    assert (s.grace_period, s.reduction_factor, s.metric, s.mode) == (2, 4, "best_val_acc", "max")


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="grace_period"):
        AshaSettings(max_t=4, grace_period=5, reduction_factor=2)
    with pytest.raises(ValueError, match="reduction_factor"):
        AshaSettings(max_t=4, grace_period=1, reduction_factor=1)
    with pytest.raises(ValueError, match="rung metric"):
        AshaSettings(max_t=4, grace_period=1, reduction_factor=2, metric="val_acc")
    with pytest.raises(ValueError, match="brackets"):  # rungs 1, 2: at most 2 brackets
        AshaSettings(max_t=3, grace_period=1, reduction_factor=2, brackets=3)
    assert AshaSettings(max_t=15, grace_period=1, reduction_factor=2).milestones(0) == [1, 2, 4, 8]
    assert AshaSettings(max_t=15, grace_period=1, reduction_factor=2).milestones(1) == [2, 4, 8]


def test_make_scheduler():
    assert isinstance(make_scheduler("fifo"), FIFOScheduler)
    assert not isinstance(make_scheduler("fifo"), GroupedASHA)
    settings = AshaSettings(max_t=8, grace_period=2, reduction_factor=3)
    assert make_scheduler("asha", settings).settings == settings
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("pbt", settings)


def test_ties_in_accuracy_are_broken_by_training_loss():
    sched = GroupedASHA(AshaSettings(max_t=8, grace_period=1, reduction_factor=4))
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
    sched = GroupedASHA(AshaSettings(max_t=8, grace_period=1, reduction_factor=4))
    low = sched.scored("a", {"best_val_acc": 0.50, "train_loss": 0.0})["rung_score"]
    high = sched.scored("b", {"best_val_acc": 0.51, "train_loss": float("nan")})["rung_score"]
    assert high > low
    assert sched.scored("c", {"epoch": 1}) == {"epoch": 1}


def test_nll_rung_metric_uses_the_running_minimum():
    sched = GroupedASHA(AshaSettings(max_t=8, grace_period=2, reduction_factor=4,
                                     metric="val_choice_nll"))
    assert sched.scored("t", {"val_choice_nll": 0.9, "train_loss": 0.0})["rung_score"] == 0.9
    # A worse epoch does not lose the best value; the tie-break adds loss for "min".
    assert sched.scored("t", {"val_choice_nll": 1.2, "train_loss": 1.0})["rung_score"] == \
        pytest.approx(0.9 + 1e-6)
    strong = [trial(f"i{i}", "synth-iconqa") for i in range(4)]
    weak = trial("weak", "synth-iconqa")
    for t in strong + [weak]:
        sched.on_trial_add(None, t)
    for i, t in enumerate(strong):
        sched.on_trial_result(None, t, {"epoch": 2, "val_choice_nll": 0.5 + i / 100})
    assert sched.on_trial_result(None, weak, {"epoch": 2, "val_choice_nll": 0.9}) == \
        TrialScheduler.STOP


def test_brackets_are_drawn_from_the_trials_cell_not_a_global_rng():
    settings = AshaSettings(max_t=16, grace_period=1, reduction_factor=2, brackets=3)
    picks = []
    for _ in range(2):
        sched = GroupedASHA(settings)
        trials = added_cells(sched, 12)
        group = sched.group_scheduler(trials[0])
        picks.append([group._brackets.index(group._trial_info[t.trial_id]) for t in trials])
    assert picks[0] == picks[1] and len(set(picks[0])) > 1


def _stop_pattern(sched, trials, accs):
    """Feed epoch-1 results in order; return the ids stopped."""
    out = []
    for t, acc in zip(trials, accs):
        if sched.on_trial_result(None, t, {"epoch": 1, "best_val_acc": acc}) == TrialScheduler.STOP:
            out.append(t.trial_id)
    return out


def test_state_persists_and_a_restored_scheduler_decides_the_same(tmp_path):
    settings = AshaSettings(max_t=8, grace_period=1, reduction_factor=2)
    trials = [trial(f"t{i}", "synth-iconqa") for i in range(8)]
    accs = [0.8, 0.7, 0.75, 0.6, 0.65, 0.5, 0.9, 0.55]
    whole = GroupedASHA(settings)
    for t in trials:
        whole.on_trial_add(None, t)
    expected = _stop_pattern(whole, trials, accs)

    uri = str(tmp_path / "exp" / "scheduler_state.json")
    first = make_scheduler("asha", settings, state_uri=uri)
    for t in trials:
        first.on_trial_add(None, t)
    stopped = _stop_pattern(first, trials[:4], accs[:4])  # ... then the driver dies
    resumed = make_scheduler("asha", settings, state_uri=uri, resume=True)
    for t in trials:
        resumed.on_trial_add(None, t)
    stopped += _stop_pattern(resumed, trials[4:], accs[4:])
    assert stopped == expected and len(expected) >= 2
    # Without the saved records, the first trials after the "restart" would be judged alone.
    fresh = make_scheduler("asha", settings)
    for t in trials:
        fresh.on_trial_add(None, t)
    assert _stop_pattern(fresh, trials[4:], accs[4:]) != [s for s in expected if s in
                                                          {t.trial_id for t in trials[4:]}]
    # A trial stopped before the interruption that Tune restarts anyway is stopped again.
    assert stopped[0] in resumed.stopped
    assert resumed.on_trial_result(None, trials[int(stopped[0][1:])],
                                   {"epoch": 2, "best_val_acc": 0.99}) == TrialScheduler.STOP


def test_resume_with_other_settings_is_refused(tmp_path):
    uri = str(tmp_path / "scheduler_state.json")
    sched = make_scheduler("asha", AshaSettings(max_t=8, grace_period=1, reduction_factor=2),
                           state_uri=uri)
    t = trial("a", "synth-iconqa")
    sched.on_trial_add(None, t)
    sched.on_trial_result(None, t, {"epoch": 1, "best_val_acc": 0.5})
    with pytest.raises(ValueError, match="Resume with the options"):
        make_scheduler("asha", AshaSettings(max_t=8, grace_period=2, reduction_factor=2),
                       state_uri=uri, resume=True)


def test_trial_key_names_every_identity_field_in_order():
    config = {"benchmark": "b", "llm": "l", "method": "m", "sublayer": "s", "rank": 2, "lr": 0.1,
              "seed": 3, "retune_of": "c", "epochs": 9}
    assert trial_key(config) == "b|l|m|s|2|0.1|3|c"
    assert trial_key({"benchmark": "b"}) == "b|None|None|None|None|None|None|None"


def test_the_accuracy_rung_score_is_the_running_maximum_minus_the_tie_break():
    sched = GroupedASHA(AshaSettings(max_t=8, grace_period=1, reduction_factor=4))
    assert sched.scored("t", {"best_val_acc": 0.6, "train_loss": 2.0})["rung_score"] == \
        pytest.approx(0.6 - 2e-6, abs=1e-12)
    # a lower value later (e.g. a restored trial's first report) does not lower the score
    assert sched.scored("t", {"best_val_acc": 0.4, "train_loss": 1.0})["rung_score"] == \
        pytest.approx(0.6 - 1e-6, abs=1e-12)
    assert sched.scored("u", {"best_val_acc": 0.4, "train_loss": 5e3})["rung_score"] == \
        pytest.approx(0.4 - 1e-3, abs=1e-12)  # the loss is clamped to MAX_LOSS


def test_a_completed_trial_is_recorded_at_its_running_best():
    """The final result of a trial whose last epoch was worse still ranks at its best."""
    settings = AshaSettings(max_t=8, grace_period=1, reduction_factor=2, metric="val_gold_nll")
    sched = GroupedASHA(settings)
    t = trial("a", "synth-iconqa")
    sched.on_trial_add(None, t)
    sched.on_trial_result(None, t, {"epoch": 1, "val_gold_nll": 0.5, "train_loss": 0.0})
    sched.on_trial_complete(None, t, {"epoch": 2, "val_gold_nll": 0.9, "train_loss": 0.0})
    (rungs,) = sched.snapshot()["groups"]["synth-iconqa\x1ftiny-t5"]
    assert {m: rec for m, rec in rungs} == {8: {}, 4: {}, 2: {"a": -0.5}, 1: {"a": -0.5}}


def test_asha_settings_override_brackets():
    assert asha_settings(16, "tiny-t5", brackets=2).brackets == 2
    assert asha_settings(16, "tiny-t5").brackets == defaults.asha_defaults("tiny-t5").brackets


def test_make_scheduler_restores_only_when_resuming(tmp_path):
    settings = AshaSettings(max_t=8, grace_period=1, reduction_factor=2)
    uri = str(tmp_path / "scheduler_state.json")
    first = make_scheduler("asha", settings, state_uri=uri)
    t = trial("a", "synth-iconqa")
    first.on_trial_add(None, t)
    first.on_trial_result(None, t, {"epoch": 1, "best_val_acc": 0.5})
    assert make_scheduler("asha", settings, state_uri=uri).snapshot()["groups"] == {}
    assert make_scheduler("asha", settings, state_uri=uri, resume=True).snapshot() == first.snapshot()
    with pytest.raises(ValueError, match="^scheduler 'asha' needs its AshaSettings$"):
        make_scheduler("asha")


def test_a_restore_refusal_names_both_settings_and_mismatched_rungs():
    old = AshaSettings(max_t=8, grace_period=1, reduction_factor=2)
    sched = GroupedASHA(old)
    t = trial("a", "synth-iconqa")
    sched.on_trial_add(None, t)
    sched.on_trial_result(None, t, {"epoch": 1, "best_val_acc": 0.5})
    state = sched.snapshot()
    new = AshaSettings(max_t=8, grace_period=2, reduction_factor=2)
    with pytest.raises(ValueError, match=re.escape(f"made with settings {asdict(old)}; this run "
                                                   f"uses {asdict(new)}.")):
        GroupedASHA(new).restore(state)
    state["groups"]["synth-iconqa\x1ftiny-t5"][0][0][0] = 3  # rung epochs edited by hand
    with pytest.raises(ValueError, match=re.escape("saved ASHA rungs [3, 4, 2, 1] do not match [8, 4, 2, 1]")):
        GroupedASHA(old).restore(state)


def test_each_group_runs_asha_with_the_settings_rungs():
    """Ray's rungs for max_t 8, grace 2, rf 2 are epochs 8, 4, 2 (a default max_t of 100,
    grace 1 or rf 4 would give others)."""
    sched = GroupedASHA(AshaSettings(max_t=8, grace_period=2, reduction_factor=2))
    sched.on_trial_add(None, trial("a", "synth-iconqa"))
    (rungs,) = sched.snapshot()["groups"]["synth-iconqa\x1ftiny-t5"]
    assert [m for m, _ in rungs] == [8, 4, 2]
    with pytest.raises(ValueError, match="epoch budget must be >= 1, got 0"):
        AshaSettings(max_t=0, grace_period=1, reduction_factor=2)


def test_brackets_are_drawn_with_asha_weights():
    """Bracket b with n_b rungs is drawn with weight e^(n_b - n_0) (as Ray's ASHA does):
    rungs 4, 3, 2 -> probabilities 0.665, 0.245, 0.090, so about 200 of 300 trials land in
    bracket 0 (a uniform draw would put about 100 there)."""
    sched = GroupedASHA(AshaSettings(max_t=16, grace_period=2, reduction_factor=2, brackets=3))
    trials = [FakeTrial(f"x{i}", {"benchmark": "synth-iconqa", "llm": "tiny-t5", "rank": i})
              for i in range(300)]
    for t in trials:
        sched.on_trial_add(None, t)
    group = sched.group_scheduler(trials[0])
    assert [len(b._rungs) for b in group._brackets] == [4, 3, 2]
    counts = [sum(group._trial_info[t.trial_id] is b for t in trials) for b in group._brackets]
    assert counts[0] > 170 and counts[2] < 50, counts


def test_settings_errors_name_the_allowed_values():
    with pytest.raises(ValueError, match="allowed: best_val_acc, val_choice_nll, val_gold_nll$"):
        AshaSettings(max_t=4, grace_period=1, reduction_factor=2, metric="val_acc")
    with pytest.raises(ValueError, match=re.escape("brackets must be in [1, 1] for grace 1")):
        AshaSettings(max_t=1, grace_period=1, reduction_factor=2, brackets=2)  # one rung
    assert AshaSettings(max_t=8, grace_period=2, reduction_factor=2).milestones(0) == [2, 4, 8]


def test_error_and_remove_reach_the_trials_group():
    sched = GroupedASHA(AshaSettings(max_t=8, grace_period=1, reduction_factor=2))
    kept, gone = trial("kept", "synth-iconqa"), trial("gone", "synth-iconqa")
    for t in (kept, gone):
        sched.on_trial_add(None, t)
    group = sched.group_scheduler(kept)
    sched.on_trial_error(None, kept)  # Ray's ASHA keeps an errored trial's bracket (a retry reuses it)
    sched.on_trial_remove(None, gone)
    assert set(group._trial_info) == {"kept"}
    assert report(sched, kept, 1, 0.5) == TrialScheduler.CONTINUE


def test_an_errored_trial_keeps_its_bracket_and_rung_values_when_tune_retries_it():
    """Tune's retry (max_failures) calls on_trial_error, then on_trial_add for the same trial:
    Ray 2.60's ASHA ignores the error, and the re-add draws the cell's bracket again."""
    settings = AshaSettings(max_t=16, grace_period=1, reduction_factor=2, brackets=3)
    sched = GroupedASHA(settings)
    trials = added_cells(sched, 6)
    group = sched.group_scheduler(trials[0])
    before = {t.trial_id: group._trial_info[t.trial_id] for t in trials}
    for i, t in enumerate(trials):
        sched.on_trial_result(None, t, {"epoch": 4, "best_val_acc": 0.5 + i / 100})
    recorded = sched.snapshot()
    sched.on_trial_error(None, trials[2])
    sched.on_trial_add(None, trials[2])
    assert {t.trial_id: group._trial_info[t.trial_id] for t in trials} == before
    assert sched.snapshot() == recorded
    assert sum(settings.bracket_weights()) == pytest.approx(1.0)
