"""One compact progress line instead of Ray Tune's status table.

Tune's CLIReporter prints a table of every trial (dozens of lines) every 30 seconds; in a
132-trial sweep the log is mostly tables, and what a researcher wants at a glance (how far, how
many failed, what is best so far, how long) is not in them. ``ProgressLine`` prints

    [sweep 4m12s] 37/132 ended (31 finished, 5 stopped, 1 error) | 2 running, 93 waiting
        | best val 71.9% synth-iconqa|tiny-t5|qformer_lora/all|r8

when the counts change, and at most every ``period_s`` otherwise (``--verbose`` brings the full
table and the workers' logs back).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ray.tune import ProgressReporter

PERIOD_S = 30.0


class ProgressLine(ProgressReporter):
    """A Tune progress reporter printing one line per change (at most one per ``min_gap_s``)."""

    def __init__(self, period_s: float = PERIOD_S, min_gap_s: float = 5.0,
                 out: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 label: Callable[[Any], str] | None = None) -> None:
        self.period_s, self.min_gap_s = period_s, min_gap_s
        self.out = out
        self.clock = clock
        self.label = label or (lambda trial: str(trial))
        self._started = clock()
        self._last_time = -float("inf")
        self._last_counts: tuple | None = None

    def setup(self, *args: Any, **kwargs: Any) -> None:  # Tune passes run metadata; unused
        pass

    def should_report(self, trials: list, done: bool = False) -> bool:
        now = self.clock()
        if done:
            return True
        if now - self._last_time >= self.period_s:
            return True
        return now - self._last_time >= self.min_gap_s and counts(trials) != self._last_counts

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        self._last_time, self._last_counts = self.clock(), counts(trials)
        print(self.line(trials), file=self.out or sys.stdout, flush=True)

    def line(self, trials: list) -> str:
        """The progress line for ``trials`` (Tune Trial objects)."""
        finished, stopped, errored, running, waiting = counts(trials)
        ended = finished + stopped + errored
        elapsed = int(self.clock() - self._started)
        text = (f"[sweep {elapsed // 60}m{elapsed % 60:02d}s] {ended}/{len(trials)} ended "
                f"({finished} finished, {stopped} stopped, {errored} error) | {running} running, "
                f"{waiting} waiting")
        best = best_trial(trials)
        if best is not None:
            text += f" | best val {100 * best.last_result['best_val_acc']:.1f}% {self.label(best)}"
        return text


def _status(trial: Any) -> str:
    """finished | stopped | error | running | waiting, as the sweep counts them."""
    if trial.status == "ERROR":
        return "error"
    if trial.status == "TERMINATED":
        result = trial.last_result or {}
        # Not ``done``: Tune also sets done=True on the last result of a trial its scheduler
        # stopped. The loop's own last report carries test_acc, or diverged=True.
        return "finished" if "test_acc" in result or result.get("diverged") else "stopped"
    return "running" if trial.status == "RUNNING" else "waiting"


def counts(trials: list) -> tuple[int, int, int, int, int]:
    """(finished, stopped, error, running, waiting)."""
    states = [_status(t) for t in trials]
    return tuple(states.count(s) for s in ("finished", "stopped", "error", "running", "waiting"))


def best_trial(trials: list) -> Any | None:
    """The trial with the highest best validation accuracy reported so far."""
    scored = [t for t in trials if isinstance((t.last_result or {}).get("best_val_acc"),
                                              (int, float))]
    return max(scored, key=lambda t: t.last_result["best_val_acc"], default=None)
