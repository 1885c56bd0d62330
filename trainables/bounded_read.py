"""Reading a file a user pointed at, without trusting what it is.

A path can name a FIFO (the open blocks for ever), /dev/zero (the read never ends), a directory,
a symlink loop, or a file far larger than any legitimate one. ``read_regular`` checks what the
path is before opening it and reads at most ``max_bytes``; ``UnreadableInput`` says why in a
few words, and each caller names the file in its own error type (DataError, YamlInputError).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path


class UnreadableInput(ValueError):
    """The file cannot be used as input; the message is the reason, without the path."""


def check_regular(path: Path, max_bytes: int) -> int:
    """The size of ``path`` if it is a regular file of at most ``max_bytes`` (symlinks
    followed), for readers that open it themselves (pyarrow); UnreadableInput otherwise."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UnreadableInput("does not exist") from None
    except OSError as err:
        raise UnreadableInput(f"cannot be read ({err.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UnreadableInput("is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableInput("is not a regular file (a device, FIFO or socket)")
    if info.st_size > max_bytes:
        raise UnreadableInput(f"is {info.st_size} bytes, more than the {max_bytes} allowed")
    return info.st_size


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (symlinks followed)."""
    check_regular(path, max_bytes)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise UnreadableInput(f"cannot be read ({err.strerror})") from None
    if len(data) > max_bytes:  # it grew after the stat
        raise UnreadableInput(f"is more than the {max_bytes} bytes allowed")
    return data


def decode_utf8(data: bytes) -> str:
    """Strict UTF-8; the error says where the first bad byte is."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UnreadableInput(f"is not UTF-8 text (byte {err.start}, line {line}: "
                              f"{data[err.start:err.start + 4]!r})") from None
