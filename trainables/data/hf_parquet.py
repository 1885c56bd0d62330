"""ScienceQA as exported to the Hugging Face hub (e.g. derek-thomas/ScienceQA, written by the
`datasets` library): parquet with columns image (struct{bytes, path}), question, choices,
answer, hint, task, grade, subject, topic, category, skill, lecture, solution; one file or a
shard set per split, named `<split>-00000-of-0000N-*.parquet` (train / validation / test).

Read with pyarrow only (`datasets` is not needed). Rows without image bytes (non-IMG problems)
are skipped. The export has no pid column, so the pid is, in order of preference: a `pid`
column if present; the folder name in the image's `path` when it looks like
`.../<pid>/image.png` (as the official layout names it); else `<split>-<row>` (row = position
within the split's shards, in file-name order) -- stable for one export, not the official pid.
"""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq

from trainables.bounded_read import UnreadableInput, check_regular
from trainables.data.errors import DataError
from trainables.data.records import SPLITS, Record, check_record, text_field
from trainables.data.scienceqa import META_FIELDS
from trainables.defaults import MAX_PARQUET_FILE_BYTES
from trainables.excerpt import excerpt

REQUIRED_COLUMNS: tuple[str, ...] = ("image", "question", "choices", "answer")
SPLIT_NAMES: dict[str, str] = {"train": "train", "validation": "val", "val": "val", "test": "test"}
_SPLIT_OF_FILE = re.compile(r"^(train|validation|val|test)(?:[-_.]|$)")


def split_of(file: Path) -> str | None:
    """Split from the file name (`validation-00000-of-00001-x.parquet`) or its folder (`val/`)."""
    for name in (file.name, file.parent.name):
        m = _SPLIT_OF_FILE.match(name)
        if m:
            return SPLIT_NAMES[m.group(1)]
    return None


def find_parquet_files(root: Path) -> dict[str, list[Path]]:
    """split -> sorted shard files under root (recursively); a parquet of no known split fails."""
    files: dict[str, list[Path]] = {s: [] for s in SPLITS}
    for file in sorted(root.rglob("*.parquet")):
        split = split_of(file)
        if split is None:
            raise DataError(file, "cannot tell the split from the file or folder name "
                            "(expected train/validation/val/test as a prefix)")
        files[split].append(file)
    return files


def is_hf_parquet_root(root: Path) -> bool:
    return root.is_dir() and any(root.rglob("*.parquet"))


def _pid(row: dict, split: str, position: int) -> str:
    if row.get("pid") not in (None, ""):
        return str(row["pid"])
    path = (row.get("image") or {}).get("path") or ""
    parts = Path(path).parts
    if len(parts) >= 2 and parts[-1] == "image.png":
        return parts[-2]
    return f"{split}-{position}"


def _record(row: dict, split: str, pid: str, file: Path) -> Record:
    choices = row.get("choices")
    if not isinstance(choices, list):
        raise DataError(file, f"choices must be a list, got {excerpt(choices)}", pid=pid, field="choices")
    answer = row.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise DataError(file, f"answer must be an integer index, got {excerpt(answer)}", pid=pid, field="answer")
    def text(key: str) -> str:
        return text_field(row, key, pid=pid, file=file)

    rec = Record(pid=pid, split=split, kind="scienceqa", question=text("question"),
                 choices=tuple(choices), answer_index=answer, hint=text("hint"),
                 lecture=text("lecture"), image=row["image"]["bytes"],
                 meta=tuple(sorted((k, text(k)) for k in META_FIELDS)))
    return check_record(rec, file)


def load_hf_scienceqa(root: str | Path) -> list[Record]:
    """IMG problems of every split found under root, validated, in file and row order."""
    root = Path(root)
    records: list[Record] = []
    for split, files in find_parquet_files(root).items():
        position = 0
        for file in files:
            try:  # a FIFO would block pyarrow's open for ever, /dev/zero never ends
                check_regular(file, MAX_PARQUET_FILE_BYTES)
            except UnreadableInput as err:
                raise DataError(file, str(err)) from None
            try:
                table = pq.read_table(file)
            except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for bad files
                raise DataError(file, f"not a readable parquet file ({exc})") from None
            for name in REQUIRED_COLUMNS:
                if name not in table.column_names:
                    raise DataError(file, "required column is missing", field=name)
            for row in table.to_pylist():
                pid = _pid(row, split, position)
                position += 1
                image = row.get("image")
                if not isinstance(image, dict) or not image.get("bytes"):
                    continue  # no image: not part of ScienceQA-IMG
                records.append(_record(row, split, pid, file))
    if not records:
        raise DataError(root, "no parquet rows with an image found")
    return records
