"""One environment variable set for a while, then put back exactly as it was found.

Why one place: the driver flips variables that libraries read at call time (Ray's loopback
switch, Tune's SIGINT handler switch, MLflow's download progress bar). Each must come back as
found, an unset variable staying unset, so that an in-process caller (a test, a notebook that
runs two sweeps) sees no trace of the first one.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def put_back(name: str, before: str | None) -> None:
    """Restore ``name`` to ``before`` (``None``: the variable was not set, so unset it)."""
    if before is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = before


@contextlib.contextmanager
def env_var(name: str, value: str) -> Iterator[None]:
    """``name=value`` while open; on exit (also by an exception) what was there before."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        put_back(name, before)
