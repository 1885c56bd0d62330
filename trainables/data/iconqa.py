"""IconQA's multi-text-choice sub-task ("choose_txt") in the official layout.

With the index files: iconqa_data/problems.json + iconqa_data/pid_splits.json (keys such as
"choose_txt_train"); the image is iconqa_data/iconqa/<split>/choose_txt/<pid>/image.png.
Without them the folder tree is walked and each problem read from its data.json.
choose_img and fill_in_blank problems are skipped (the paper trains on choose_txt only).
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
from trainables.data.scienceqa import read_split_lists
from trainables.excerpt import excerpt

SUBTASK = "choose_txt"
META_FIELDS: tuple[str, ...] = ("ques_type", "grade", "label")


def _record(data_root: Path, pid: str, raw: Any, split: str, file: Path) -> Record:
    if not isinstance(raw, dict):
        raise DataError(file, f"problem must be an object, got {type(raw).__name__}", pid=pid)
    # The folder is the problem's own split field when it has one (a re-split keeps files in place).
    own_split = raw.get("split", split)
    if not isinstance(own_split, str):
        raise DataError(file, f"split must be a string, got {excerpt(own_split)}", pid=pid, field="split")
    path = safe_join(data_root, "iconqa", own_split, SUBTASK, pid, "image.png", pid=pid, field="image", file=file)
    rec = Record(
        pid=pid, split=split, kind="iconqa",
        question=text_field(raw, "question", pid=pid, file=file),
        choices=choices_field(raw, pid=pid, file=file),
        answer_index=answer_field(raw, pid=pid, file=file),
        hint="", lecture="",
        image=read_image(path, pid=pid, field="image", file=file),
        meta=tuple(sorted((k, text_field(raw, k, pid=pid, file=file)) for k in META_FIELDS)),
    )
    return check_record(rec, file)


def _data_root(root: Path) -> Path:
    """Accept either the folder holding iconqa_data/ or iconqa_data/ itself."""
    return root / "iconqa_data" if (root / "iconqa_data").is_dir() else root


def is_iconqa_root(root: Path) -> bool:
    return (_data_root(root) / "iconqa").is_dir()


def load_iconqa(root: str | Path) -> list[Record]:
    """choose_txt problems of train/val/test; from the index files when present, else the tree."""
    data_root = _data_root(Path(root))
    problems_file = data_root / "problems.json"
    if not problems_file.exists() and not (data_root / "pid_splits.json").exists():
        return walk_iconqa(data_root)
    problems = read_json(problems_file)
    if not isinstance(problems, dict):
        raise DataError(problems_file, "expected an object of pid -> problem")
    keys = {f"{SUBTASK}_{s}": s for s in SPLITS}
    where = read_split_lists(data_root / "pid_splits.json", keys, problems)
    records = []
    for pid, split in where.items():
        raw = problems[pid]
        if isinstance(raw, dict) and raw.get("ques_type", SUBTASK) != SUBTASK:
            continue  # listed under choose_txt_* but typed otherwise: not ours
        records.append(_record(data_root, pid, raw, split, problems_file))
    return records


def walk_iconqa(data_root: Path) -> list[Record]:
    """The index-free mode: every iconqa/<split>/choose_txt/<pid>/data.json, sorted by pid."""
    records = []
    for split in SPLITS:
        folder = data_root / "iconqa" / split / SUBTASK
        if not folder.is_dir():
            continue
        pids = sorted((p.name for p in folder.iterdir() if p.is_dir()), key=lambda s: (len(s), s))
        for pid in pids:
            file = folder / pid / "data.json"
            records.append(_record(data_root, pid, read_json(file), split, file))
    if not records:
        raise DataError(data_root, f"no iconqa/<split>/{SUBTASK}/<pid>/ folders found")
    return records
