"""SIGINT / SIGTERM: a sweep that is stopped says so, saves its state and exits 130 / 143.

Ray Tune's own Ctrl-C handling ends ``fit()`` quietly and returns a partial ResultGrid, which
the sweep used to summarise as if it had finished (exit 0, parent run FINISHED, a Table 1 of the
cells that happened to end, interrupted trials shown as "stopped early"); SIGTERM (what a
scheduler or ``kill`` sends) was not handled at all. Here both signals are recorded by one
handler, so the driver always knows it was interrupted, and which way:

- before trials run (checks, data preparation) the first signal raises ``Interrupted`` at once;
- while Tune runs, the signal is recorded and ``tune_callbacks.StopTune`` (a Tune callback) asks Tune to end
  its loop the documented way (SIGUSR1: Tune checkpoints the experiment state one last time);
  every later ``fit()`` (the retunes) stops at its first step;
- a second signal raises ``Interrupted`` at once (the impatient second Ctrl-C).

The driver then ends the MLflow parent run as KILLED, writes no Table 1, prints the --resume
command and exits 128 + signal number (130 for SIGINT, 143 for SIGTERM).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from orchestrator.environ import put_back

SIGNALS = (signal.SIGINT, signal.SIGTERM)
TUNE_SWITCH = "TUNE_DISABLE_SIGINT_HANDLER"
"""Off: Tune's own SIGINT handler would swallow the first Ctrl-C without telling the driver."""


class Interrupted(KeyboardInterrupt):
    """The sweep was told to stop; ``signum`` says by which signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SweepStop:
    """Why the sweep must stop early: SIGINT/SIGTERM (recorded by the handler; raises at once
    unless ``defer``, the Tune phase, is on) or a condition a callback found (``request``:
    the storage filling up)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.reason: str | None = None
        self.code = 0
        self.defer = False
        self._previous: dict[Any, Any] = {}

    @property
    def stopping(self) -> bool:
        return self.signum is not None or self.reason is not None

    def request(self, reason: str, code: int) -> None:
        """Stop the Tune phase gracefully for ``reason``; the sweep then exits with ``code``."""
        if not self.stopping:
            self.reason, self.code = reason, code

    def install(self) -> None:
        """(Re)install the handler: ray.init installs its own SIGTERM handler, so the driver
        calls this again after Ray starts. Tune's own SIGINT handler is switched off so that
        Ctrl-C reaches this one (TUNE_DISABLE_SIGINT_HANDLER is read at each fit())."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous.setdefault("env", os.environ.get(TUNE_SWITCH))
        os.environ[TUNE_SWITCH] = "1"
        for sig in SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        """Put back the handlers found by the first install() (in-process callers, tests)."""
        env = self._previous.pop("env", None)
        if threading.current_thread() is threading.main_thread():
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
        self._previous.clear()
        put_back(TUNE_SWITCH, env)

    @property
    def exit_code(self) -> int:
        """128 + the signal number, the shell's convention (130 SIGINT, 143 SIGTERM), or the
        code of a requested stop."""
        return 128 + self.signum if self.signum is not None else self.code

    @property
    def name(self) -> str:
        """What stopped the sweep, for its last lines."""
        return signal.Signals(self.signum).name if self.signum is not None else str(self.reason)

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        if first:
            self.signum, self.reason = signum, None
        if not first or not self.defer:
            raise Interrupted(self.signum)
        print(f"\nsweep: {signal.Signals(signum).name} received: stopping after the current "
              f"step and saving the experiment state (send it again to stop at once)",
              file=sys.stderr, flush=True)
