"""Divergent cells and their learning-rate retunes (the paper's starred cells).

The paper re-ran cells that diverged at the default learning rate (e.g. 71.29 among ~85s) with a
smaller one. Here, after the grid phase:

Divergence rule. A cell is divergent when
  (a) its trial reported diverged=True (non-finite loss or a loss blow-up, trainables.loop), or
  (b) its best validation accuracy lies far below a sibling's -- siblings are the same
      (benchmark, LLM, method, sublayer) at the other ranks -- compared AT THE SAME EPOCH
      (min of the two trials' last epochs, so an ASHA-stopped trial is judged fairly):
          gap = sibling_best_at(k) - cell_best_at(k) > margin,
          margin = max(MIN_GAP, NOISE_SIGMAS * sqrt(p * (1 - p) / n_val)),
      p the sibling's accuracy, n_val the validation problems. MIN_GAP = 0.10 (10 points: the
      paper's starred cells trail by 14-30 points); the noise term keeps small validation sets
      (the tiny offline setting: 48 problems, sigma ~7 points) from flagging sampling noise
      (3 sigma ~ 21 points there; ~3 points on the real ScienceQA val set, so MIN_GAP rules).
  Failed (errored) cells are not retuned: their error is a bug to fix, not a learning rate.

Each divergent cell gets a Tuner with OptunaSearch (TPE, seeded) over the lr distribution of
search_spaces.lr_retune plus (grouped) ASHA, trials tagged retune_of=<cell_id>. The best retune
trial replaces the cell in the final table, marked '*', when orchestrator.results.model.select picks
it over the original (it beats its best validation accuracy, or the original diverged);
otherwise the original stays and the summary says the retune did not help.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.driver.unreported import reported
from orchestrator.results.model import TrialResult, select
from trainables import defaults
from trainables.config import TrialConfig

MIN_GAP = 0.10
"""Smallest accuracy gap (absolute) to a sibling that counts as divergence."""
NOISE_SIGMAS = 3.0
"""The gap must also exceed this many binomial standard errors of the sibling's accuracy."""
REAL_VAL_SIZES = {"scienceqa": 2097, "iconqa": 6316}
"""Validation problems of the real benchmarks (paper appendix B)."""


def val_size(config: TrialConfig) -> int:
    """Validation problems a trial was scored on (caps included)."""
    size = REAL_VAL_SIZES.get(config.benchmark) or defaults.SYNTH_SPLIT_SIZES["val"]
    cap = config.max_eval_examples
    return min(size, cap) if cap else size


def margin(p: float, n_val: int) -> float:
    """Gap to a sibling that counts as divergence (module docstring)."""
    p = min(max(p, 0.0), 1.0)
    return max(MIN_GAP, NOISE_SIGMAS * math.sqrt(p * (1 - p) / max(n_val, 1)))


def _siblings(row: TrialResult, rows: list[TrialResult]) -> list[TrialResult]:
    """The same cell at the other ranks (same benchmark, LLM, method, sublayer, adapter, alpha)."""
    def without_rank(t: TrialResult) -> tuple:
        c, p = t.cell, t.cell.peft
        return c.benchmark, c.llm, p.method, p.sublayer, p.adapter, p.alpha
    return [r for r in rows if r is not row and not r.failed
            and r.cell.peft.rank != row.cell.peft.rank and without_rank(r) == without_rank(row)]


def divergence_reason(row: TrialResult, rows: list[TrialResult]) -> str | None:
    """Why ``row`` is divergent (None: it is not); the rule is in the module docstring."""
    if row.failed:
        return None
    if row.diverged:
        return "trial reported diverged"
    for sib in _siblings(row, rows):
        epoch = min(row.epochs_run, sib.epochs_run)
        mine, theirs = row.best_at(epoch), sib.best_at(epoch)
        if mine is None or theirs is None:
            continue
        need = margin(theirs, val_size(row.config))
        if theirs - mine > need:
            return (f"best val {mine:.3f} at epoch {epoch} trails rank {sib.cell.peft.rank}'s "
                    f"{theirs:.3f} by more than {need:.3f}")
    return None


def find_divergent(rows: list[TrialResult]) -> list[tuple[TrialResult, str]]:
    """Every divergent cell's first divergent grid trial with its reason, in grid order (one
    retune per cell, however many of its seeds diverged)."""
    out, seen = [], set()
    for row in rows:
        reason = divergence_reason(row, rows) if row.cell.id not in seen else None
        if reason:
            out.append((row, reason))
            seen.add(row.cell.id)
    return out


@dataclass(frozen=True)
class Retune:
    """The learning-rate search of one divergent cell."""

    original: TrialResult
    """The grid trial that diverged."""
    reason: str
    """Why it counted as divergent."""
    trials: list[TrialResult]
    """The retune trials."""

    @property
    def chosen(self) -> TrialResult:
        """What the cell shows: results.select over the grid trial and its retunes."""
        return select([self.original, *self.trials])

    @property
    def replaces(self) -> bool:
        """Whether a retune trial takes the cell's place in the table."""
        return self.chosen is not self.original

    def describe(self) -> str:
        orig = self.original
        head = f"{orig.cell.id}: {self.reason}; {len(self.trials)} lrs tried"
        if not self.replaces:
            return head + "; no retune trial beat the original (kept)"
        best = self.chosen
        return (f"{head}; best lr {best.lr:.3g}: val {100 * best.best_val_acc:.1f} "
                f"(was {100 * (orig.best_val_acc or 0):.1f} at lr {orig.lr:.3g})")


def retune_name(sweep_name: str, cell_id: str) -> str:
    return f"{sweep_name}-retune-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", cell_id)


def retune_cell(row: TrialResult, reason: str, trainable: Callable, sweep_name: str,
                settings: Any, *, seed: int, num_samples: int, resume: bool,
                logger: Any = None, scorer: Callable | None = None) -> Retune:
    """One seeded TPE + ASHA learning-rate search for a divergent cell."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.driver import tuner as tn
    from orchestrator.driver.scheduler_state import state_uri
    from orchestrator.driver.schedulers import METRIC, MODE, asha_settings, make_scheduler
    from search_spaces import lr_retune
    name = retune_name(sweep_name, row.cell.id)
    space = lr_retune.space_for(row.config.to_dict(), row.cell.id, row.config.lr)
    restoring = resume and tn.can_restore(settings.storage, name)
    scheduler = make_scheduler("asha", asha_settings(row.config.epochs, row.config.llm),
                               resume=restoring,
                               state_uri=state_uri(tn.experiment_path(settings.storage, name)))
    if restoring:
        tuner = tn.restore_tuner(trainable, name, settings, scheduler, space)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, num_samples // 2))
        search = OptunaSearch(metric=METRIC, mode=MODE, sampler=sampler)
        tuner = tn.build_tuner(trainable, space, name, settings, scheduler,
                               search_alg=search, num_samples=num_samples)
    results = tuner.fit()
    # A retune trial Tune lost before its first report tried no lr: not one of the cell's trials.
    trials, _ = reported(results)
    if logger is not None:  # stopped retune trials get their test score too
        from orchestrator.driver.stopped_scores import score_stopped_trials, with_scores
        trials = with_scores(trials, score_stopped_trials(results, settings, logger, scorer))
    return Retune(original=row, reason=reason, trials=trials)


def retune_divergent(rows: list[TrialResult], trainable: Callable, sweep_name: str,
                     settings: Any, *, seed: int, num_samples: int | None,
                     resume: bool, logger: Any = None,
                     scorer: Callable | None = None) -> list[Retune]:
    """Find the divergent cells and retune each (one Tuner after another)."""
    from search_spaces import lr_retune
    divergent = find_divergent(rows)
    if divergent:
        print(f"retuning {len(divergent)} divergent cell(s): "
              + ", ".join(r.cell.id for r, _ in divergent))
    return [retune_cell(row, reason, trainable, sweep_name, settings, seed=seed,
                        num_samples=num_samples or lr_retune.NUM_SAMPLES, resume=resume,
                        logger=logger, scorer=scorer)
            for row, reason in divergent]
