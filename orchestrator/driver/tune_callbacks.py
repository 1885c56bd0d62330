"""Tune callbacks that end a sweep's Tune loop early and cleanly: on a signal, or before the
storage is full.

Both use Tune's documented graceful stop, its SIGUSR1 handler (installed by every ``fit()``):
the loop ends after the current step and the experiment state is checkpointed once more, so
``--resume`` continues exactly from there. What the stop was for lives in the sweep's
``interrupts.SweepStop``, which the driver reads after ``fit()`` returns.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

MIN_FREE_BYTES = 16 * 2**20
"""Stop when less is free on the storage's filesystem (or 3 checkpoints' worth, if larger)."""


class StopTune(Callback):
    """Ends a running Tune loop once ``stop`` (an interrupts.SweepStop) asks for it."""

    def __init__(self, stop: Any) -> None:
        self.stop = stop
        self._sent = False

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run config; the live stop belongs to this process only.
        return {"stop": None, "_sent": False}

    def setup(self, **info: Any) -> None:
        self._sent = False  # a new fit(): Tune installed a fresh SIGUSR1 handler

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.stop is not None and self.stop.stopping and not self._sent:
            self._sent = True
            signal.raise_signal(signal.SIGUSR1)


class StorageGuard(Callback):
    """Stops the sweep, resumably, when the local storage is about to run out of space.

    A full disk used to surface as ENOSPC tracebacks from whichever write came first (a trial's
    checkpoint, Tune's experiment state, the tracking database) and left no report. Free space
    is checked at most every ``period_s``; below ``max(MIN_FREE_BYTES, 3 x the largest
    checkpoint so far)`` the sweep stops before a checkpoint is half-written, with one message
    naming the path, and exits with ``code``. Cloud storage has no such limit (not checked).
    """

    def __init__(self, stop: Any, storage: str, code: int, period_s: float = 1.0,
                 free_bytes: Callable[[str], int] | None = None) -> None:
        self.stop, self.storage, self.code, self.period_s = stop, storage, code, period_s
        self.free_bytes = free_bytes or _statvfs_free
        self.largest_checkpoint = 0
        self._last = -float("inf")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stop": None, "free_bytes": None}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        size = result.get("checkpoint_mb")
        if isinstance(size, (int, float)):
            self.largest_checkpoint = max(self.largest_checkpoint, int(size * 2**20))

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.stop is None or "://" in self.storage:
            return
        now = time.monotonic()
        if now - self._last < self.period_s:
            return
        self._last = now
        need = max(MIN_FREE_BYTES, 3 * self.largest_checkpoint)
        free = self.free_bytes(self.storage)
        if free < need:
            self.stop.request(f"storage {self.storage} is full ({free / 2**20:.1f} MiB free, "
                              f"the sweep needs {need / 2**20:.1f} MiB to write checkpoints)",
                              self.code)


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer can still use on the filesystem of ``path``."""
    return _statvfs_free(path)


def _statvfs_free(path: str) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize
