"""Grouped ASHA: early stopping that only ever compares trials of the same benchmark and LLM.

Why groups: ASHA stops a trial whose metric trails the others at a rung. Accuracies of
different benchmarks (or LLMs) are not comparable -- an IconQA trial at 0.60 is doing well while
a ScienceQA trial at 0.60 is not -- so one ASHA over the whole grid would stop the wrong trials.
``GroupedASHA`` keeps one AsyncHyperBandScheduler per group (benchmark, llm), read from the
trial's config, and forwards every event to the group's scheduler. One Tuner runs all groups
concurrently on the same cluster, which keeps --resume a single Tuner.restore.

Rung metric (``AshaSettings.metric``): each trial's best-so-far value of ``best_val_acc``
(max), ``val_choice_nll`` or ``val_gold_nll`` (min; trainables.predictions), so that noise
cannot un-pass a rung. Accuracy on a small validation set is coarse (96 problems: steps of ~1
point, many ties) and ASHA lets every tie through, so the rung score also subtracts TIE_BREAK x
the epoch's training loss: among equal values the lower loss ranks higher, different values keep
their order (the shift is below one accuracy step for any finite loss below ~100).

Deterministic and resumable: with several brackets, each trial's bracket is drawn from a
generator seeded by the trial's cell (not Ray's global RNG), so a rerun assigns the same
brackets; with ``state_uri`` every rung record and every stop is written to the experiment
directory after each decision and ``restore`` loads them (orchestrator.driver.scheduler_state), so
``--resume`` makes the decisions an uninterrupted sweep makes -- including re-stopping a trial
whose STOP was decided just before the interruption but not yet in Tune's own snapshot.

Defaults (trainables.defaults.asha_defaults; the replay table behind them is in the comments
there): tiny recipe (8 epochs) grace 1, reduction factor 3, one bracket, rung metric
val_gold_nll -- rungs at epochs 1 and 3, each keeping the best third by the gold answer's
validation NLL: replayed on FIFO curves of the whole grid on the pretrained base (``python -m
orchestrator.driver.scheduler_replay``) it is the most saving setting that keeps all four
groups' FIFO winners (1.83x fewer trial-epochs; ranked by accuracy instead, an epoch-1 rung
stops two of them). Real recipe (15 epochs): grace 8, factor 2, val_gold_nll -- one rung at
the paper's own earliest stop (epoch 8, the half-way point) keeping the better half; there are
no real-size curves to replay yet.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from orchestrator.driver import scheduler_state
from orchestrator.driver.spaces import group_of
from trainables import defaults
from trainables.defaults import AshaSettings

SCORE = "rung_score"
"""What each group's ASHA compares: the running best of the rung metric with the tie-break."""
TIE_BREAK = 1e-6
"""Weight of the training loss in rung_score (clamped to MAX_LOSS; non-finite loss = MAX_LOSS)."""
MAX_LOSS = 1e3
METRIC = "best_val_acc"
"""The model-selection metric (also what retunes optimise)."""
MODE = "max"
TIME_ATTR = "epoch"
RUNG_METRICS = defaults.RUNG_METRICS
STATE_VERSION = 1


def asha_settings(epochs: int, preset: str, *, grace_period: int | None = None,
                  reduction_factor: float | None = None, brackets: int | None = None,
                  metric: str | None = None) -> AshaSettings:
    """The preset's recipe defaults (trainables.defaults.asha_defaults) at this sweep's epoch
    budget, overridden where given; the default grace period is capped at the epoch budget (a
    2-epoch smoke sweep). Validated on construction (ValueError naming the setting)."""
    d = defaults.asha_defaults(preset)
    return replace(d, max_t=epochs, grace_period=grace_period or min(d.grace_period, epochs),
                   reduction_factor=reduction_factor or d.reduction_factor,
                   brackets=brackets or d.brackets, metric=metric or d.metric)


def trial_key(config: dict[str, Any]) -> str:
    """A trial's identity that is the same in every run of the same space (not Tune's id)."""
    keys = ("benchmark", "llm", "method", "sublayer", "rank", "lr", "seed", "retune_of")
    return "|".join(str(config.get(k)) for k in keys)


class GroupedASHA(FIFOScheduler):
    """One AsyncHyperBandScheduler per (benchmark, llm) group, behind one TrialScheduler.

    Scheduling order (choose_trial_to_run) is FIFO over all groups, inherited; only the
    stop/continue decisions are per group.
    """

    def __init__(self, settings: AshaSettings,
                 group_fn: Callable[[dict[str, Any]], tuple] = group_of,
                 key_fn: Callable[[dict[str, Any]], str] = trial_key,
                 state_uri: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self._group_fn, self._key_fn, self.state_uri = group_fn, key_fn, state_uri
        self._groups: dict[tuple, AsyncHyperBandScheduler] = {}
        self._best: dict[str, float] = {}  # trial_id -> running best of the rung metric
        self._stopped: set[str] = set()

    def _new_group(self) -> AsyncHyperBandScheduler:
        s = self.settings
        # stop_last_trials=False: a trial's final report (test_acc, done) comes at epoch max_t
        # too, and must not be cut off by a STOP at that epoch.
        return AsyncHyperBandScheduler(
            time_attr=TIME_ATTR, metric=SCORE, mode=s.mode, max_t=s.max_t,
            grace_period=s.grace_period, reduction_factor=s.reduction_factor,
            brackets=s.brackets, stop_last_trials=False)

    def group_scheduler(self, trial) -> AsyncHyperBandScheduler:
        """The ASHA of this trial's group, created on first sight of the group."""
        key = tuple(self._group_fn(trial.config))
        if key not in self._groups:
            self._groups[key] = self._new_group()
        return self._groups[key]

    @property
    def groups(self) -> list[tuple]:
        """Groups seen so far (for the summary and tests)."""
        return list(self._groups)

    @property
    def stopped(self) -> set[str]:
        """Trial ids this scheduler stopped early."""
        return set(self._stopped)

    def on_trial_add(self, tune_controller, trial) -> None:
        group = self.group_scheduler(trial)
        group.on_trial_add(tune_controller, trial)
        # Replace Ray's draw from numpy's global RNG by one seeded with the trial's cell (Ray's
        # weights): a trial Tune re-adds after an error gets the same bracket again.
        rng = random.Random(self._key_fn(trial.config))
        bracket = rng.choices(group._brackets, weights=self.settings.bracket_weights())[0]
        group._trial_info[trial.trial_id] = bracket

    def scored(self, trial_id: str, result: dict) -> dict:
        """The result plus rung_score (module docstring); unchanged without the metric."""
        metric = self.settings.metric
        if not result or result.get(metric) is None:
            return result
        value, previous = float(result[metric]), self._best.get(trial_id)
        if previous is not None:
            value = max(value, previous) if self.settings.mode == "max" else min(value, previous)
        self._best[trial_id] = value
        loss = result.get("train_loss")
        loss = MAX_LOSS if loss is None or not math.isfinite(loss) else min(float(loss), MAX_LOSS)
        sign = 1.0 if self.settings.mode == "max" else -1.0
        return {**result, SCORE: value - sign * TIE_BREAK * loss}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.trial_id in self._stopped:  # stopped before an interruption: stays stopped
            return TrialScheduler.STOP
        action = self.group_scheduler(trial).on_trial_result(
            tune_controller, trial, self.scored(trial.trial_id, result))
        if action == TrialScheduler.STOP:
            self._stopped.add(trial.trial_id)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self.group_scheduler(trial).on_trial_complete(tune_controller, trial,
                                                      self.scored(trial.trial_id, result))
        self._save()

    def on_trial_error(self, tune_controller, trial) -> None:
        # Ray 2.60's AsyncHyperBandScheduler does nothing here (FIFOScheduler's no-op): the
        # trial keeps its bracket and the rung values it recorded, and a trial Tune retries
        # (max_failures) is re-added through on_trial_add, which draws the same bracket.
        # Forwarded so that a Ray whose ASHA does act on errors still sees them.
        self.group_scheduler(trial).on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self.group_scheduler(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"GroupedASHA: {len(self._groups)} groups, {len(self._stopped)} trials stopped early"

    # -- persistence (orchestrator.driver.scheduler_state) -----------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything decisions depend on, as plain JSON."""
        groups = {"\x1f".join(key): [[[m, dict(rec)] for m, rec in b._rungs] for b in g._brackets]
                  for key, g in self._groups.items()}
        return {"version": STATE_VERSION, "settings": asdict(self.settings), "groups": groups,
                "best": dict(self._best), "stopped": sorted(self._stopped)}

    def _save(self) -> None:
        if self.state_uri is not None:
            scheduler_state.write_state(self.state_uri, self.snapshot())

    def restore(self, state: dict[str, Any]) -> None:
        """Load a snapshot() taken by a scheduler with the same settings (else ValueError)."""
        if state.get("version") != STATE_VERSION or state.get("settings") != asdict(self.settings):
            raise ValueError(f"the sweep's saved ASHA state was made with settings "
                             f"{state.get('settings')}; this run uses {asdict(self.settings)}. "
                             f"Resume with the options the sweep was started with.")
        for key, brackets in state["groups"].items():
            group = self._groups.setdefault(tuple(key.split("\x1f")), self._new_group())
            for bracket, rungs in zip(group._brackets, brackets):
                if [m for m, _ in rungs] != [m for m, _ in bracket._rungs]:
                    raise ValueError(f"saved ASHA rungs {[m for m, _ in rungs]} do not match "
                                     f"{[m for m, _ in bracket._rungs]}")
                bracket._rungs = [(m, dict(rec)) for m, rec in rungs]
        self._best = {k: float(v) for k, v in state["best"].items()}
        self._stopped = set(state["stopped"])


def make_scheduler(kind: str, settings: AshaSettings | None = None, *,
                   state_uri: str | None = None, resume: bool = False) -> TrialScheduler:
    """'asha' -> GroupedASHA(settings) persisting to ``state_uri`` (and, with ``resume``,
    restored from it); 'fifo' -> run every trial to its end."""
    if kind == "fifo":
        return FIFOScheduler()
    if kind != "asha":
        raise ValueError(f"unknown scheduler {kind!r}; allowed: asha, fifo")
    if settings is None:
        raise ValueError("scheduler 'asha' needs its AshaSettings")
    sched = GroupedASHA(settings, state_uri=state_uri)
    if resume and state_uri is not None:
        saved = scheduler_state.read_state(state_uri)
        if saved is not None:
            sched.restore(saved)
    return sched
