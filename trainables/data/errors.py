"""The one exception bad benchmark data raises, naming the culprit file, pid and field."""
from __future__ import annotations

from pathlib import Path

from trainables.excerpt import excerpt


class DataError(ValueError):
    """A benchmark record or file is unusable. The message names file, pid and field so a user
    can find the culprit without a debugger; raised before any training starts."""

    def __init__(self, file: str | Path, problem: str, *, pid: str | None = None,
                 field: str | None = None) -> None:
        self.file = str(file)
        self.pid = pid
        self.field = field
        where = [f"file {self.file}"]
        if pid is not None:
            where.append(f"pid {excerpt(pid)}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {problem}")
