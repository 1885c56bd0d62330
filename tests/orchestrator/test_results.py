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
    TrialResult,
    from_tune_result,
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
