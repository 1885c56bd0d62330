"""The benchmark-independent problem record, its validation, and safe file access.

Every loader (official ScienceQA, official IconQA, Hugging Face parquet, prepared Parquet)
produces `Record`s, so the same checks apply to all of them and round trips can be compared
field by field.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from trainables.bounded_read import UnreadableInput, decode_utf8, read_regular
from trainables.data.errors import DataError
from trainables.defaults import MAX_IMAGE_FILE_BYTES, MAX_JSON_FILE_BYTES
from trainables.excerpt import excerpt

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The three splits every benchmark is reduced to (Hugging Face's "validation" becomes "val")."""

KINDS: tuple[str, ...] = ("scienceqa", "iconqa")
"""Prompt families: ScienceQA (with context) and IconQA (question only)."""


@dataclass(frozen=True)
class Record:
    """One multiple-choice problem with its image, as read from any source."""

    pid: str
    """Problem id, unique within a benchmark."""
    split: str
    """The split the problem is used in (from pid_splits / file name), one of SPLITS."""
    kind: str
    """Prompt family, one of KINDS."""
    question: str
    choices: tuple[str, ...]
    """Answer options in their original order (at least two)."""
    answer_index: int
    """Index of the correct option in `choices`."""
    hint: str
    """ScienceQA's context text; "" when absent (always "" for IconQA)."""
    lecture: str
    """ScienceQA's lecture; "" when absent (always "" for IconQA)."""
    image: bytes
    """The image file's bytes, unchanged (PNG in both official releases)."""
    meta: tuple[tuple[str, str], ...] = ()
    """Remaining source fields kept for losslessness (e.g. grade, skill, solution), sorted."""


def check_record(rec: Record, file: str | Path) -> Record:
    """Reject a record a model cannot be trained or scored on; returns it unchanged."""
    if not isinstance(rec.question, str) or not rec.question.strip():
        raise DataError(file, "question is empty or not a string", pid=rec.pid, field="question")
    if len(rec.choices) < 2:
        raise DataError(file, f"needs at least 2 choices, got {excerpt(list(rec.choices))}",
                        pid=rec.pid, field="choices")
    for c in rec.choices:
        if not isinstance(c, str) or not c.strip():
            raise DataError(file, f"choice {excerpt(c)} is empty or not a string", pid=rec.pid, field="choices")
    if isinstance(rec.answer_index, bool) or not isinstance(rec.answer_index, int) \
            or not 0 <= rec.answer_index < len(rec.choices):
        raise DataError(file, f"answer index {excerpt(rec.answer_index)} out of range for "
                        f"{len(rec.choices)} choices", pid=rec.pid, field="answer")
    if rec.split not in SPLITS:
        raise DataError(file, f"split {excerpt(rec.split)} not one of {SPLITS}", pid=rec.pid, field="split")
    check_png(rec.image, file, rec.pid)
    return rec


def check_png(data: bytes, file: str | Path, pid: str | None) -> None:
    """Decode the image fully once, so a corrupt or truncated file fails here, not mid-epoch."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as exc:  # PIL raises many types for bad input
        raise DataError(file, f"image cannot be decoded ({type(exc).__name__}: {exc})",
                        pid=pid, field="image") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]], file: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # json.load would silently keep the last one
            raise DataError(file, "duplicate key (duplicate pid?)", pid=key)
        out[key] = value
    return out


def read_json(file: Path) -> Any:
    """Parse a JSON file, rejecting invalid/truncated JSON and duplicate keys with the file named.

    Bounded: a regular file of at most MAX_JSON_FILE_BYTES, strict UTF-8, and nesting that
    Python's parser can take (a RecursionError is an error about the file, not a traceback).
    """
    try:
        text = decode_utf8(read_regular(file, MAX_JSON_FILE_BYTES))
    except UnreadableInput as err:
        raise DataError(file, str(err)) from None
    try:
        return json.loads(text, object_pairs_hook=lambda p: _no_duplicate_keys(p, file))
    except json.JSONDecodeError as exc:
        raise DataError(file, f"invalid or truncated JSON: {exc}") from None
    except RecursionError:
        raise DataError(file, "JSON nested too deeply") from None


def safe_join(root: Path, *parts: str, pid: str, field: str, file: Path) -> Path:
    """root/parts, refusing any path that leaves `root` (e.g. an image field of '../../x')."""
    for part in parts:
        if not isinstance(part, str) or not part:
            raise DataError(file, f"path component {excerpt(part)} is empty or not a string", pid=pid, field=field)
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DataError(file, f"path {excerpt('/'.join(parts))} escapes the data root {root}", pid=pid, field=field)
    return path


def read_image(path: Path, *, pid: str, field: str, file: Path) -> bytes:
    """The bytes of an image file that must exist (IMG records)."""
    try:
        return read_regular(path, MAX_IMAGE_FILE_BYTES)
    except UnreadableInput as err:
        problem = "is missing" if str(err) == "does not exist" else str(err)
        raise DataError(file, f"image file {path} {problem}", pid=pid, field=field) from None


def text_field(raw: dict[str, Any], key: str, *, pid: str, file: Path) -> str:
    """An optional text field: missing or null is "", anything but a string is an error."""
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(file, f"expected a string, got {excerpt(value)}", pid=pid, field=key)
    return value


def choices_field(raw: dict[str, Any], *, pid: str, file: Path) -> tuple[str, ...]:
    """The choices list; a non-list fails here, too-few choices fail in check_record."""
    value = raw.get("choices")
    if not isinstance(value, list):
        raise DataError(file, f"choices must be a list, got {excerpt(value)}", pid=pid, field="choices")
    return tuple(value)


def answer_field(raw: dict[str, Any], *, pid: str, file: Path) -> int:
    value = raw.get("answer")
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(file, f"answer must be an integer index, got {excerpt(value)}", pid=pid, field="answer")
    return value
