"""Quoting user input in error messages without echoing all of it.

An error names the culprit; it must not repeat a 4 MB value (an expanded YAML bomb, a pid of a
million characters) or break the one-line contract with a newline. Every message that shows a
value the user supplied goes through ``excerpt``; the CLIs pass whole messages through
``one_line``.
"""
from __future__ import annotations

from typing import Any

ERROR_EXCERPT_CHARS = 80
"""The most of a user's value an error message quotes."""


def excerpt(value: Any, limit: int = ERROR_EXCERPT_CHARS) -> str:
    """repr(value), cut to ``limit`` characters with the full length said when cut.

    Containers are not repr()'d whole (a deep or huge one costs time and memory before the cut).
    """
    if isinstance(value, (list, tuple, dict, set, frozenset)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        text = repr(value)
    except RecursionError:
        return f"<deeply nested {type(value).__name__}>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"


def one_line(message: str, limit: int = 600) -> str:
    """A message on one line, at most ``limit`` characters (the CLIs' last line of defence)."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."
