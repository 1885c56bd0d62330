"""ScienceQA in the official layout: problems.json + pid_splits.json + images/<split>/<pid>/<image>.

Only problems with an image ("IMG") are kept. The image folder is the problem's own `split`
field, not the pid_splits key it is listed under (a re-split keeps the files where they are).
An empty hint or lecture is treated as absent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from trainables.data.errors import DataError
from trainables.data.records import (
    SPLITS,
    Record,
    answer_field,
    check_record,
    choices_field,
    read_image,
    read_json,
    safe_join,
    text_field,
)
from trainables.excerpt import excerpt

META_FIELDS: tuple[str, ...] = ("solution", "task", "grade", "subject", "topic", "category", "skill")
"""Source fields kept as record metadata (the hub export has the same ones)."""


def read_split_lists(file: Path, keys: dict[str, str], problems: dict[str, Any]) -> dict[str, str]:
    """pid -> split from a pid_splits file. `keys` maps the file's key to our split name.
    A pid listed twice, or absent from problems.json, is an error naming the list."""
    lists = read_json(file)
    if not isinstance(lists, dict):
        raise DataError(file, "expected an object of split name -> list of pids")
    where: dict[str, str] = {}
    for key, split in keys.items():
        pids = lists.get(key, [])
        if not isinstance(pids, list):
            raise DataError(file, f"split list {excerpt(key)} is not a list", field=key)
        for pid in map(str, pids):
            if pid in where:
                raise DataError(file, f"duplicate pid, listed in {excerpt(where[pid])} and {excerpt(split)}",
                                pid=pid, field=key)
            if pid not in problems:
                raise DataError(file, "pid is listed but absent from problems.json", pid=pid, field=key)
            where[pid] = split
    return where


def _record(root: Path, pid: str, raw: Any, split: str, file: Path) -> Record | None:
    """One problem as a Record; None when it has no image (not part of ScienceQA-IMG)."""
    if not isinstance(raw, dict):
        raise DataError(file, f"problem must be an object, got {type(raw).__name__}", pid=pid)
    image_name = raw.get("image")
    if not image_name:
        return None
    if not isinstance(image_name, str):
        raise DataError(file, f"image must be a file name, got {excerpt(image_name)}", pid=pid, field="image")
    own_split = raw.get("split")
    if not isinstance(own_split, str) or not own_split:
        raise DataError(file, f"split must be a non-empty string, got {excerpt(own_split)}", pid=pid, field="split")
    path = safe_join(root, "images", own_split, pid, image_name, pid=pid, field="image", file=file)
    rec = Record(
        pid=pid, split=split, kind="scienceqa",
        question=text_field(raw, "question", pid=pid, file=file),
        choices=choices_field(raw, pid=pid, file=file),
        answer_index=answer_field(raw, pid=pid, file=file),
        hint=text_field(raw, "hint", pid=pid, file=file),
        lecture=text_field(raw, "lecture", pid=pid, file=file),
        image=read_image(path, pid=pid, field="image", file=file),
        meta=tuple(sorted((k, text_field(raw, k, pid=pid, file=file)) for k in META_FIELDS)),
    )
    return check_record(rec, file)


def is_scienceqa_root(root: Path) -> bool:
    return (root / "problems.json").is_file() and (root / "pid_splits.json").is_file()


def load_scienceqa(root: str | Path) -> list[Record]:
    """All IMG problems listed under train/val/test in pid_splits.json, validated, in list order."""
    root = Path(root)
    problems_file = root / "problems.json"
    problems = read_json(problems_file)
    if not isinstance(problems, dict):
        raise DataError(problems_file, "expected an object of pid -> problem")
    where = read_split_lists(root / "pid_splits.json", {s: s for s in SPLITS}, problems)
    records = []
    for pid, split in where.items():
        rec = _record(root, pid, problems[pid], split, problems_file)
        if rec is not None:
            records.append(rec)
    return records
