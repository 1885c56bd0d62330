"""Test score and predictions of a trial the scheduler stopped, from its last checkpoint.

Why after the fact: a function trainable is not told that the scheduler stopped it; Ray just
ends it after a report. Its last checkpoint still holds the best-validation state and that
epoch's validation scores (trainables.loop), so scoring the test split from it gives exactly
what the trial would have reported had it been allowed to finish at that point: the same
selection rule (best validation accuracy), the same scorer, the same predictions artifact.

Cost: one pass over the test split per stopped trial (plus building the model and reading the
val/test data; the training split is not loaded). Scoring the test split inside every trial
whenever its validation accuracy improves would instead cost a test pass per improvement for
every trial, finished ones included -- at real size, where the test split is as large as the
validation split, that is up to one extra evaluation per epoch. One pass per stopped trial is
the cheaper way to a test score in every cell.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainables.checkpoint import load_checkpoint, load_trainable_state
from trainables.config import TrialConfig
from trainables.loop import build_trial, final_evaluation
from trainables.predictions import write_predictions
from trainables.split_cache import SplitCache

SPLITS = SplitCache()
"""This process's encoded splits, kept from one stopped trial to the next: a Ray worker scores
many trials of one group in a row (trainables.split_cache)."""


def score_stopped(config: dict[str, Any], checkpoint_dir: Path, out_dir: Path,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """Test metrics (the final report's keys, plus ``best_epoch``) of the checkpoint's best
    state; writes ``predictions.parquet`` into ``out_dir``."""
    cfg = TrialConfig.from_dict(dict(config))
    trial = build_trial(cfg, device, splits=("val", "test"), split_cache=SPLITS)
    state, best = load_checkpoint(Path(checkpoint_dir), trial.model, None)
    if "final_metrics" in state:  # it did finish: its own final report is the answer
        raise ValueError(f"{checkpoint_dir} is the checkpoint of a finished trial; use its "
                         f"final report instead of rescoring it")
    if not state.get("best_epoch"):
        raise ValueError(f"{checkpoint_dir} holds no validated epoch; nothing to score")
    load_trainable_state(trial.model, best)
    metrics, table = final_evaluation(trial, state)
    write_predictions(table, Path(out_dir))
    return {**metrics, "best_epoch": state["best_epoch"], "best_val_acc": state["best_val_acc"]}
