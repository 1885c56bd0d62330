"""Grouped ASHA: early stopping that only ever compares trials of the same benchmark and LLM.

Why: ASHA stops a trial whose metric trails the others at a rung. Accuracies of different
benchmarks (or LLMs) are not comparable -- an IconQA trial at 0.60 is doing well while a
ScienceQA trial at 0.60 is not -- so one ASHA over the whole grid would stop the wrong trials.
``GroupedASHA`` keeps one AsyncHyperBandScheduler per group (benchmark, llm), read from the
trial's config, and forwards every event to the group's scheduler. One Tuner runs all groups
concurrently on the same cluster, which keeps --resume a single Tuner.restore.

Ties: with a small validation set accuracies are coarse (48 problems: steps of 2 points), many
trials tie at a rung, and ASHA lets every tie through (it stops only scores strictly below the
cutoff). So each group's ASHA ranks by ``rung_score`` = best_val_acc minus TIE_BREAK x the
epoch's training loss: among equal accuracies the lower loss ranks higher; different accuracies
keep their order (the shift is below one accuracy step for any finite loss below ~100).

Defaults derived from the epoch budget E (``asha_defaults``):
  grace_period = max(1, E // 8)  -- first rung after ~1/8 of the budget (E=8 or 15: epoch 1);
  reduction_factor = 4           -- Ray's default: keep the top quarter at each rung, so rungs at
                                    g, 4g, 16g, ... below E (E=8: 1, 4; E=15: 1, 4).
  max_t = E.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from orchestrator.driver.spaces import group_of

SCORE = "rung_score"
"""What each group's ASHA compares: best_val_acc with the training-loss tie-break."""
TIE_BREAK = 1e-6
"""Weight of the training loss in rung_score (clamped to MAX_LOSS; non-finite loss = MAX_LOSS)."""
MAX_LOSS = 1e3
METRIC = "best_val_acc"
"""Compared at each rung: best-so-far validation accuracy (monotone, so noise cannot un-pass a rung)."""
MODE = "max"
TIME_ATTR = "epoch"


def asha_defaults(epochs: int) -> tuple[int, int]:
    """(grace_period, reduction_factor) for an epoch budget; rule in the module docstring."""
    if epochs < 1:
        raise ValueError(f"epoch budget must be >= 1, got {epochs}")
    return max(1, epochs // 8), 4


class GroupedASHA(FIFOScheduler):
    """One AsyncHyperBandScheduler per (benchmark, llm) group, behind one TrialScheduler.

    Scheduling order (choose_trial_to_run) is FIFO over all groups, inherited; only the
    stop/continue decisions are per group.
    """

    def __init__(self, max_t: int, grace_period: int, reduction_factor: float,
                 metric: str = METRIC, mode: str = MODE, time_attr: str = TIME_ATTR,
                 group_fn: Callable[[dict[str, Any]], tuple] = group_of) -> None:
        if grace_period < 1 or grace_period > max_t:
            raise ValueError(f"grace_period must be in [1, max_t={max_t}], got {grace_period}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
        super().__init__()
        self._metric, self._mode = metric, mode
        # stop_last_trials=False: a trial's final report (test_acc, done) comes at epoch max_t
        # too, and must not be cut off by a STOP at that epoch.
        self._asha_kwargs = dict(time_attr=time_attr, metric=SCORE, mode=mode, max_t=max_t,
                                 grace_period=grace_period, reduction_factor=reduction_factor,
                                 stop_last_trials=False)
        self._group_fn = group_fn
        self._groups: dict[tuple, AsyncHyperBandScheduler] = {}

    def group_scheduler(self, trial) -> AsyncHyperBandScheduler:
        """The ASHA of this trial's group, created on first sight of the group."""
        key = tuple(self._group_fn(trial.config))
        if key not in self._groups:
            self._groups[key] = AsyncHyperBandScheduler(**self._asha_kwargs)
        return self._groups[key]

    @property
    def groups(self) -> list[tuple]:
        """Groups seen so far (for the summary and tests)."""
        return list(self._groups)

    def on_trial_add(self, tune_controller, trial) -> None:
        self.group_scheduler(trial).on_trial_add(tune_controller, trial)

    def scored(self, result: dict) -> dict:
        """The result plus rung_score (module docstring); unchanged without the metric."""
        if not result or self._metric not in result or result[self._metric] is None:
            return result
        loss = result.get("train_loss")
        loss = MAX_LOSS if loss is None or not math.isfinite(loss) else min(float(loss), MAX_LOSS)
        sign = 1.0 if self._mode == "max" else -1.0
        return {**result, SCORE: float(result[self._metric]) - sign * TIE_BREAK * loss}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.group_scheduler(trial).on_trial_result(tune_controller, trial,
                                                           self.scored(result))

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self.group_scheduler(trial).on_trial_complete(tune_controller, trial, self.scored(result))

    def on_trial_error(self, tune_controller, trial) -> None:
        # ASHA forgets an errored trial; a retried one is added again by Tune.
        self.group_scheduler(trial).on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self.group_scheduler(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        stopped = sum(s._num_stopped for s in self._groups.values())
        return f"GroupedASHA: {len(self._groups)} groups, {stopped} trials stopped early"


def make_scheduler(kind: str, epochs: int, grace_period: int | None = None,
                   reduction_factor: float | None = None) -> TrialScheduler:
    """'asha' -> GroupedASHA with documented defaults; 'fifo' -> run every trial to its end."""
    if kind == "fifo":
        return FIFOScheduler()
    if kind != "asha":
        raise ValueError(f"unknown scheduler {kind!r}; allowed: asha, fifo")
    default_grace, default_rf = asha_defaults(epochs)
    return GroupedASHA(max_t=epochs, grace_period=grace_period or default_grace,
                       reduction_factor=reduction_factor or default_rf)
