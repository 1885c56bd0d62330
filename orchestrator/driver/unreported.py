"""Trials that never reported: their cells are still shown, as failed.

Why: Tune can fail a trial before it reports anything -- e.g. "Could not re-use actor" when the
reused actor's previous trial outlasted the reset wait. Such a trial has no result.json, its Ray
``Result`` has no config, and Tune calls no ``on_trial_error`` for it: it vanished. Measured on a
full-grid ``make sweep`` (2026-11-30): the summary said "131 cells ... 0 failed", the sweep
exited 0, and Table 1 silently lacked the cell. The grid's own trial list says which trials must
be there; each one without a result is added as failed (✗) with a FAILED MLflow run saying why,
so the console, Table 1 and the exit status (1) all show it, and ``--resume`` reruns it (Tune's
restore reruns errored trials).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from orchestrator.driver.endings import resume_command
from orchestrator.results.model import ERROR, TrialResult, from_tune_result
from trainables.config import TrialConfig

NEVER_REPORTED = "the trial never reported a result"


class FailedRunLog(Protocol):
    """What this module needs of the tracker's Tune callback (TrialRunLogger)."""

    def log_unreported(self, config: TrialConfig, error: str) -> str: ...


def _key(config: TrialConfig) -> tuple[str, int, float]:
    """What tells two trials of one Tuner apart: the cell and seed (grid), the lr (retunes)."""
    return config.cell_id, config.seed, config.lr


def reported(results: Sequence[Any]) -> tuple[list[TrialResult], list[Any]]:
    """Ray's ``Result``s as TrialResults, and apart the Results of trials lost before their
    first report (no config, or another trial's -- see below). The grid and the retunes both
    read their Tuner's results through this."""
    parsed = [(r, from_tune_result(r)) for r in results if r.config is not None]
    taken = Counter(_key(t.config) for _, t in parsed)
    kept, lost = [], [r for r in results if r.config is None]
    for r, t in parsed:
        if taken[_key(t.config)] > 1 and t.failed and "epoch" not in (r.metrics or {}):
            # Failed before its first report, under another trial's identity: Ray's
            # Trial.last_result falls back to the reused actor's default result, whose config
            # is the actor's PREVIOUS trial. It is a lost trial, not a second one of that cell.
            lost.append(r)
            continue
        kept.append(t)
    return kept, lost


def grid_results(results: Sequence[Any], planned: Sequence[TrialConfig],
                 log: FailedRunLog | None = None) -> list[TrialResult]:
    """The grid's TrialResults: Ray's, plus one failed entry per planned trial without one.

    ``results``: Ray Tune ``Result``s (a never-started trial's has ``config`` None);
    ``planned``: the grid's trials as the sweep prepared them (cell and seed identify one)."""
    reported_trials, lost = reported(results)
    seen = {_key(t.config) for t in reported_trials}
    orphans = [str(r.error).strip().splitlines()[-1] for r in lost if r.error is not None]
    missing = [c for c in planned if _key(c) not in seen]
    why = NEVER_REPORTED
    if len(missing) == 1 and len(orphans) == 1:  # only then is Tune's error surely this trial's
        why += f" (Tune: {orphans[0][:300]})"
    added = []
    for config in missing:
        run_id = log.log_unreported(config, why) if log is not None else ""
        added.append(TrialResult(cell=config.cell, status=ERROR, best_val_acc=None, test_acc=None,
                                 retune_of=config.retune_of, lr=config.lr, error=why,
                                 run_id=run_id, name=config.cell_id, config=config,
                                 seed=config.seed))
    return reported_trials + added


def failed_message(failed: Sequence[Any], argv: Sequence[str]) -> str:
    """The failed cells and the command that reruns them (a resumed sweep reruns errored
    trials; finished ones are kept)."""
    again = resume_command(argv)
    names = ", ".join(o.cell.id for o in failed[:5]) + (" ..." if len(failed) > 5 else "")
    return (f"\n{len(failed)} cell(s) failed ({names}); see their errors above and in MLflow. "
            f"Rerun them (finished trials are kept) with:\n  {again}")
