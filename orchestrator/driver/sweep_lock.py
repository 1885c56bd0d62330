"""One sweep per name at a time: an atomic lock held for the whole sweep.

Two sweeps started with the same name used to interleave in one Tune experiment and one MLflow
experiment (two parents, every cell twice) and both exited 0: "does the experiment exist?" was
checked, then acted on, with room in between. The lock closes that gap: it is taken before the
existence check and held until the process ends, so the second sweep fails at once, naming the
first one's pid and host.

Mechanism: ``flock`` on ``<storage>/<name>/.sweep.lock``. The kernel drops the lock when the
holding process dies however it dies (SIGKILL, OOM), so a crashed sweep never leaves a stale
lock behind, and ``--resume`` right after a crash just works. The file's content (pid, host,
start time) is only information for the error message. A cloud ``--storage`` (s3://, gs://)
has no atomic create; there the lock file lives in the local ``--cache-dir``
(``names.state_dir``) and covers the sweeps started from this machine.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO

from orchestrator.driver.names import state_dir

LOCK_FILE = ".sweep.lock"


class SweepLocked(RuntimeError):
    """Another live sweep holds the name; the message says which process and where."""


class SweepLock:
    """Hold with ``acquire()``; released by ``release()`` or when the process exits."""

    def __init__(self, storage: str, name: str, cache_dir: str | Path) -> None:
        self.storage, self.name = storage, name
        self.path = state_dir(storage, name, cache_dir) / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise SweepLocked naming the holder (never waits)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(self.path)
            handle.close()
            raise SweepLocked(f"sweep {self.name!r} is already running ({holder}; lock "
                              f"{self.path}); wait for it to end or choose another --name") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
        handle.flush()
        self._file = handle

    def release(self, discard: bool = False) -> None:
        """Unlock. ``discard``: the sweep failed before writing anything; remove the lock file
        and its directory if nothing else is in it, so a refused sweep leaves no trace. (A
        sweep starting in that instant may then lock a file that is gone: it only loses the
        guard against a third sweep starting at the same moment.)"""
        if self._file is None:
            return
        if discard and [p.name for p in self.path.parent.iterdir()] == [LOCK_FILE]:
            self.path.unlink()
            self.path.parent.rmdir()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def describe_holder(path: Path) -> str:
    """'pid N on host H since T' from the lock file (best effort: it is only a message)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8")[:1000])
        return f"pid {int(info['pid'])} on host {str(info['host'])[:100]} since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
