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
trial (by best validation accuracy) replaces the cell in the final table, marked '*', when it
beats the original (or the original diverged); otherwise the original stays and the summary
says the retune did not help.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Callable

from orchestrator.summary import CellResult
from trainables import defaults
from trainables.config import TrialConfig

MIN_GAP = 0.10
"""Smallest accuracy gap (absolute) to a sibling that counts as divergence."""
NOISE_SIGMAS = 3.0
"""The gap must also exceed this many binomial standard errors of the sibling's accuracy."""
REAL_VAL_SIZES = {"scienceqa": 2097, "iconqa": 6316}
"""Validation problems of the real benchmarks (paper appendix B)."""


def val_size(config: dict[str, Any]) -> int:
    """Validation problems a trial was scored on (caps included)."""
    bench = config["benchmark"]
    size = REAL_VAL_SIZES.get(bench) or defaults.SYNTH_SPLIT_SIZES["val"]
    cap = config.get("max_eval_examples")
    return min(size, cap) if cap else size


def margin(p: float, n_val: int) -> float:
    """Gap to a sibling that counts as divergence (module docstring)."""
    p = min(max(p, 0.0), 1.0)
    return max(MIN_GAP, NOISE_SIGMAS * math.sqrt(p * (1 - p) / max(n_val, 1)))


def divergence_reason(row: CellResult, rows: list[CellResult]) -> str | None:
    """Why ``row`` is divergent (None: it is not); the rule is in the module docstring."""
    if row.error:
        return None
    if row.diverged:
        return "trial reported diverged"
    c = row.config
    siblings = [r for r in rows if r is not row and not r.error and r.config["rank"] != c["rank"]
                and all(r.config[k] == c[k] for k in ("benchmark", "llm", "method", "sublayer"))]
    for sib in siblings:
        epoch = min(row.epochs_run, sib.epochs_run)
        mine, theirs = row.best_at(epoch), sib.best_at(epoch)
        if mine is None or theirs is None:
            continue
        need = margin(theirs, val_size(c))
        if theirs - mine > need:
            return (f"best val {mine:.3f} at epoch {epoch} trails rank {sib.config['rank']}'s "
                    f"{theirs:.3f} by more than {need:.3f}")
    return None


def find_divergent(rows: list[CellResult]) -> list[tuple[CellResult, str]]:
    """Every divergent cell with its reason, in grid order."""
    out = []
    for row in rows:
        reason = divergence_reason(row, rows)
        if reason:
            out.append((row, reason))
    return out


@dataclass(frozen=True)
class Retune:
    """The learning-rate search of one divergent cell."""

    original: CellResult
    """The grid trial that diverged."""
    reason: str
    """Why it counted as divergent."""
    trials: list[CellResult]
    """The retune trials."""

    @property
    def best(self) -> CellResult | None:
        ok = [t for t in self.trials if t.best_val_acc is not None and not t.error and not t.diverged]
        return max(ok, key=lambda t: t.best_val_acc) if ok else None

    @property
    def replaces(self) -> bool:
        """Whether the best retune trial takes the cell's place in the table."""
        best, orig = self.best, self.original
        return best is not None and (orig.diverged or orig.best_val_acc is None
                                     or best.best_val_acc > orig.best_val_acc)

    def describe(self) -> str:
        orig = self.original
        head = f"{orig.cell_id}: {self.reason}; {len(self.trials)} lrs tried"
        if not self.replaces:
            return head + "; no retune trial beat the original (kept)"
        best = self.best
        return (f"{head}; best lr {best.config['lr']:.3g}: val {100 * best.best_val_acc:.1f} "
                f"(was {100 * (orig.best_val_acc or 0):.1f} at lr {resolved_lr(orig.config):.3g})")


def resolved_lr(config: dict[str, Any]) -> float:
    """The lr a grid trial actually used (None -> the method's default)."""
    return TrialConfig.from_dict(config).lr


def retune_name(sweep_name: str, cell_id: str) -> str:
    return f"{sweep_name}-retune-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", cell_id)


def retune_cell(row: CellResult, reason: str, trainable: Callable, sweep_name: str,
                settings: Any, *, seed: int, num_samples: int, resume: bool) -> Retune:
    """One seeded TPE + ASHA learning-rate search for a divergent cell."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator import tuner as tn
    from orchestrator.schedulers import METRIC, MODE, make_scheduler
    from orchestrator.summary import rows_from_results
    from search_spaces import lr_retune
    name = retune_name(sweep_name, row.cell_id)
    space = lr_retune.space_for(row.config, row.cell_id, resolved_lr(row.config))
    if resume and tn.can_restore(settings.storage, name):
        tuner = tn.restore_tuner(trainable, space, name, settings)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, num_samples // 2))
        search = OptunaSearch(metric=METRIC, mode=MODE, sampler=sampler)
        epochs = TrialConfig.from_dict(row.config).epochs
        tuner = tn.build_tuner(trainable, space, name, settings, make_scheduler("asha", epochs),
                               search_alg=search, num_samples=num_samples)
    return Retune(original=row, reason=reason, trials=rows_from_results(tuner.fit()))


def retune_divergent(rows: list[CellResult], trainable: Callable, sweep_name: str,
                     settings: Any, *, seed: int, num_samples: int | None,
                     resume: bool) -> list[Retune]:
    """Find the divergent cells and retune each (one Tuner after another)."""
    from search_spaces import lr_retune
    divergent = find_divergent(rows)
    if divergent:
        print(f"retuning {len(divergent)} divergent cell(s): "
              + ", ".join(r.cell_id for r, _ in divergent))
    return [retune_cell(row, reason, trainable, sweep_name, settings, seed=seed,
                        num_samples=num_samples or lr_retune.NUM_SAMPLES, resume=resume)
            for row, reason in divergent]


def apply_retunes(rows: list[CellResult], retunes: list[Retune]) -> list[CellResult]:
    """Rows with each improved cell replaced by its best retune trial (retuned_lr set: '*')."""
    better = {r.original.cell_id: r.best for r in retunes if r.replaces}
    return [replace(better[row.cell_id], retuned_lr=better[row.cell_id].config["lr"])
            if row.cell_id in better else row for row in rows]
