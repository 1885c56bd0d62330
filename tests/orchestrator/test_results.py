"""The results model: one status rule, one selection rule, one set of marks, from Ray or MLflow."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from orchestrator.driver.tuner import CELL_INDEX
from orchestrator.results.model import (
    DIVERGED,
    ERROR,
    FINISHED,
    STOPPED,
    CellOutcome,
    TrialResult,
    from_tune_result,
    is_final_report,
    marks,
    outcomes,
    select,
    status_of,
)
from trainables.cell import parse_cell_id

CELL = parse_cell_id("synth-iconqa|tiny-t5|qformer_lora/ffn|r2")


def trial(val, test=None, status=FINISHED, retune=False, run_id=""):
    return TrialResult(CELL, status, val, test, 3, retune_of=CELL.id if retune else None,
                       run_id=run_id)


@pytest.mark.parametrize(("last", "failed", "diverged", "status"), [
    ({"epoch": 3, "test_acc": 0.5, "best_epoch": 2}, False, False, FINISHED),
    ({"epoch": 1, "val_acc": 0.5}, False, False, STOPPED),
    ({"epoch": 2, "diverged": True, "done": True}, False, True, DIVERGED),
    ({"epoch": 2, "test_acc": 0.5}, True, False, ERROR),
])
def test_status_rule(last, failed, diverged, status):
    assert status_of(last, failed=failed, diverged=diverged) == status


def test_selection_best_val_diverged_loses_ties_keep_the_grid_trial():
    grid, retune = trial(0.6, 0.5), trial(0.6, 0.7, retune=True)
    assert select([grid, retune]) is grid  # a retune must beat the grid trial
    better = trial(0.65, 0.1, retune=True)
    assert select([grid, retune, better]) is better  # by validation, never by test
    high_but_diverged = trial(0.9, None, DIVERGED)
    assert select([high_but_diverged, trial(0.2, 0.2, retune=True)]).best_val_acc == 0.2
    assert select([trial(0.9, 0.9, ERROR), grid]) is grid


def test_marks():
    assert marks(trial(0.6, 0.5)) == ""
    assert marks(trial(0.6, None, STOPPED)) == "†3"  # stopped after its 3 epochs
    assert marks(trial(0.6, 0.5, retune=True)) == "*"
    assert marks(trial(0.6, 0.5, retune=True), markdown=True) == "\\*"
    assert marks(trial(0.1, None, DIVERGED)) == "‡"
    assert marks(trial(0.1, None, ERROR)) == "✗"


def test_outcomes_group_by_cell_in_order():
    other = TrialResult(parse_cell_id("synth-iconqa|tiny-t5|qformer_lora/ffn|r2|dora"),
                        FINISHED, 0.9, 0.9)
    grid, retune = trial(0.3, 0.3, run_id="g"), trial(0.5, 0.4, retune=True, run_id="r")
    cells = outcomes([grid, other, retune])
    assert [c.cell.id for c in cells] == [CELL.id, other.cell.id]
    assert cells[0].chosen is retune and cells[0].trials == (grid, retune)


def test_from_tune_result_parses_the_flat_config_once():
    config = {CELL_INDEX: 0, "method": "qformer_lora", "sublayer": "ffn", "rank": 2,
              "llm": "tiny-t5", "benchmark": "synth-iconqa", "adapter": "dora"}
    frame = pd.DataFrame({"epoch": [1, 2], "best_val_acc": [0.4, 0.5]})
    result = SimpleNamespace(config=config, error=None, metrics_dataframe=frame, metrics={
        "epoch": 2, "best_val_acc": 0.5, "test_acc": 0.45, "best_epoch": 2, "trial_id": "t1",
        "trainable_fraction": 0.01, "time_total_s": 3.0})
    t = from_tune_result(result)
    assert t.cell.id == "synth-iconqa|tiny-t5|qformer_lora/ffn|r2|dora"
    assert (t.status, t.test_acc, t.run_id, t.history) == (FINISHED, 0.45, "t1", ((1, 0.4), (2, 0.5)))
    assert t.config.adapter == "dora" and t.lr == t.config.lr > 0
    stopped = SimpleNamespace(config=config, error=None, metrics_dataframe=None,
                              metrics={"epoch": 1, "best_val_acc": 0.4, "done": True})
    assert from_tune_result(stopped).status == STOPPED
    failed = SimpleNamespace(config=config, error=RuntimeError("boom"), metrics_dataframe=None,
                             metrics={})
    assert from_tune_result(failed).error == "RuntimeError: boom"
    assert from_tune_result(failed).status == ERROR


def test_final_report_and_rule_order():
    assert is_final_report({"best_epoch": 1}) and is_final_report({"test_acc": 0.0})
    assert not is_final_report({"epoch": 3, "val_acc": 0.5, "best_val_acc": 0.5})
    # failed wins over diverged, diverged over a final report
    assert status_of({"test_acc": 0.5}, failed=True, diverged=True) == ERROR
    assert status_of({"test_acc": 0.5}, failed=False, diverged=True) == DIVERGED


def test_accuracy_is_test_else_best_validation_and_says_which():
    assert trial(0.6, 0.5).accuracy == (0.5, False)
    assert trial(0.6, 0.0).accuracy == (0.0, False)  # a zero test score is still a test score
    assert trial(0.6, None, STOPPED).accuracy == (0.6, True)
    assert trial(None, None, STOPPED).accuracy == (None, False)


def test_best_at_is_the_best_validation_reported_up_to_an_epoch():
    t = TrialResult(CELL, FINISHED, 0.6, 0.5, 3, history=((1, 0.4), (2, 0.6), (3, 0.5)))
    assert [t.best_at(e) for e in (0, 1, 2, 3, 9)] == [None, 0.4, 0.6, 0.6, 0.6]


def test_selection_edges():
    with pytest.raises(ValueError, match=r"^select\(\) needs at least one trial$"):
        select([])
    never, zero = trial(None, None, STOPPED), trial(0.0, 0.0, retune=True)
    assert select([never, zero]) is zero  # a reported 0.0 beats no report
    assert select([zero, never]) is zero
    a, b = trial(0.5, 0.1), trial(0.5, 0.9)
    assert select([a, b]) is a and select([b, a]) is b  # equals: first (grid order)
    assert select([trial(0.1, None, ERROR), trial(0.2, None, DIVERGED)]).status == DIVERGED


def test_a_cell_shows_its_chosen_retune_alone_else_every_seed_chosen_first():
    seed0, seed1 = trial(0.4, 0.40, run_id="s0"), trial(0.6, 0.50, STOPPED, run_id="s1")
    seed2 = trial(0.5, None, STOPPED, run_id="s2")
    losing = trial(0.3, 0.9, retune=True, run_id="r")
    cell = CellOutcome(CELL, (seed0, seed1, losing, seed2))
    assert cell.chosen is seed1 and cell.shown == (seed1, seed0, seed2)
    assert cell.marks() == "†3/3"  # every shown seed the scheduler stopped
    assert cell.mean_sd("test_acc") == (None, None)  # one seed lacks a test score
    mean, sd = CellOutcome(CELL, (seed0, seed1)).mean_sd("test_acc")
    assert mean == pytest.approx(0.45) and sd == pytest.approx(0.0707107, rel=1e-5)
    assert CellOutcome(CELL, (seed0,)).mean_sd("best_val_acc") == (0.4, None)
    winning = trial(0.7, 0.2, retune=True, run_id="w")
    replaced = CellOutcome(CELL, (seed0, seed1, winning))
    assert replaced.shown == (winning,) and replaced.marks(markdown=True) == "\\*"
    assert replaced.mean_sd("test_acc") == (0.2, None)


def test_marks_combine_in_legend_order():
    stopped_retune = TrialResult(CELL, STOPPED, 0.5, None, 2, retune_of=CELL.id)
    assert marks(stopped_retune) == "*†2"
    assert marks(TrialResult(CELL, DIVERGED, None, None, 1, retune_of=CELL.id)) == "*‡"
    # a retune that failed after its retries keeps its retune mark (chosen when its validation
    # beat the diverged grid trial's)
    failed_retune = TrialResult(CELL, ERROR, 0.5, None, 2, retune_of=CELL.id)
    assert marks(failed_retune) == "*✗" and marks(failed_retune, markdown=True) == "\\*✗"
    assert select([trial(0.3, None, DIVERGED), failed_retune]) is failed_retune


def test_from_tune_result_reads_every_field():
    config = {CELL_INDEX: 0, "method": "qformer_lora", "sublayer": "ffn", "rank": 2,
              "llm": "tiny-t5", "benchmark": "synth-iconqa", "seed": 7, "lr": 0.003,
              "retune_of": CELL.id}
    frame = pd.DataFrame({"epoch": [1, 2, 3], "best_val_acc": [0.4, float("nan"), 0.5]})
    metrics = {"epoch": 3, "best_val_acc": 0.5, "test_acc": 0.45, "best_epoch": 3,
               "trial_id": 12, "trainable_fraction": 0.01, "time_total_s": 3.5}
    t = from_tune_result(SimpleNamespace(config=config, error=None, metrics_dataframe=frame,
                                         metrics=metrics))
    assert (t.epochs_run, t.best_val_acc, t.test_acc, t.time_s) == (3, 0.5, 0.45, 3.5)
    assert (t.trainable_fraction, t.run_id, t.name, t.seed) == (0.01, "12", CELL.id, 7)
    assert (t.retune_of, t.lr, t.error) == (CELL.id, 0.003, None)
    assert t.history == ((1, 0.4), (3, 0.5))  # an epoch without a value is skipped
    diverged = {"epoch": 2, "best_val_acc": 0.3, "test_acc": 0.9, "diverged": True}
    d = from_tune_result(SimpleNamespace(config=config, error=None, metrics_dataframe=None,
                                         metrics=diverged))
    assert (d.status, d.test_acc, d.history, d.time_s) == (DIVERGED, None, (), 0.0)
    no_best = pd.DataFrame({"epoch": [1], "val_acc": [0.4]})
    e = from_tune_result(SimpleNamespace(config=config, error=None, metrics_dataframe=no_best,
                                         metrics={}))
    assert (e.history, e.epochs_run, e.run_id, e.status) == ((), 0, "", STOPPED)
