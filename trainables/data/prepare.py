"""Prepared Parquet: validated records + their exact prompts, one file per split, plus a manifest.

Layout of a prepared folder: `train.parquet`, `val.parquet`, `test.parquet` (one row per
problem, image bytes inside) and `manifest.json` (counts and chance level per split, source,
source hash, content hash). Folders are written under a temporary name and renamed into
place, so concurrent trials on one node and a crash never leave a half-written folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trainables.data.categories import categories_of
from trainables.data.errors import DataError
from trainables.data.prompts import build_prompt
from trainables.data.records import SPLITS, Record
from trainables.defaults import CONTEXT_MAX_WORDS

FORMAT_VERSION = 2
"""2: + categories (ScienceQA leaderboard categories, trainables.data.categories). Bump when the
prepared columns or the prompt rules change: old caches are then not reused."""

SCHEMA = pa.schema([
    ("pid", pa.string()), ("split", pa.string()), ("benchmark", pa.string()), ("kind", pa.string()),
    ("image", pa.binary()), ("question", pa.string()), ("choices", pa.list_(pa.string())),
    ("answer_index", pa.int32()), ("hint", pa.string()), ("lecture", pa.string()),
    ("context", pa.string()), ("prompt", pa.string()), ("qformer_text", pa.string()),
    ("candidates", pa.list_(pa.string())), ("target", pa.string()), ("meta", pa.string()),
    ("categories", pa.list_(pa.string())),
])
MANIFEST = "manifest.json"


def _rows(records: list[Record], benchmark: str) -> dict[str, list]:
    cols: dict[str, list] = {name: [] for name in SCHEMA.names}
    for rec in records:
        parts = build_prompt(rec)
        row = dict(pid=rec.pid, split=rec.split, benchmark=benchmark, kind=rec.kind, image=rec.image,
                   question=rec.question, choices=list(rec.choices), answer_index=rec.answer_index,
                   hint=rec.hint, lecture=rec.lecture, context=parts.context, prompt=parts.prompt,
                   qformer_text=parts.qformer_text, candidates=list(parts.candidates),
                   target=parts.target, meta=json.dumps(dict(rec.meta), sort_keys=True),
                   categories=list(categories_of(rec)))
        for name, value in row.items():
            cols[name].append(value)
    return cols


def content_hash(records: list[Record]) -> str:
    """sha256 over every field of every record (image bytes included), in order."""
    h = hashlib.sha256()
    for rec in records:
        text = json.dumps([rec.pid, rec.split, rec.kind, rec.question, list(rec.choices),
                           rec.answer_index, rec.hint, rec.lecture, list(rec.meta)])
        h.update(text.encode())
        h.update(hashlib.sha256(rec.image).digest())
    return h.hexdigest()


def check_unique_pids(records: list[Record], source: str) -> None:
    seen: set[str] = set()
    for rec in records:
        if rec.pid in seen:
            raise DataError(source, "duplicate pid", pid=rec.pid, field="pid")
        seen.add(rec.pid)


def check_splits(records: list[Record], source: str) -> None:
    """Every split present and non-empty: a trial validates, selects and tests on them, and an
    empty one would fail every trial of the benchmark after Ray started."""
    have = {r.split for r in records}
    missing = [s for s in SPLITS if s not in have]
    if missing:
        raise DataError(source, f"split(s) {', '.join(missing)} have no problems; every "
                                f"benchmark needs {', '.join(SPLITS)}")


def write_prepared(records: list[Record], out: Path, *, benchmark: str, source: str, source_hash: str) -> None:
    """Write the split files and the manifest into `out` (an existing, empty folder)."""
    check_unique_pids(records, source)
    check_splits(records, source)
    manifest = {"format_version": FORMAT_VERSION, "benchmark": benchmark, "source": source,
                "source_hash": source_hash, "content_hash": content_hash(records),
                "context_max_words": CONTEXT_MAX_WORDS, "counts": {}, "chance": {}}
    for split in SPLITS:
        part = [r for r in records if r.split == split]
        table = pa.table(_rows(part, benchmark), schema=SCHEMA)
        pq.write_table(table, out / f"{split}.parquet", compression="zstd")
        manifest["counts"][split] = len(part)
        # Expected accuracy of uniform guessing: the mean of 1/len(choices).
        manifest["chance"][split] = (sum(1 / len(r.choices) for r in part) / len(part)) if part else None
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(prepared_dir: str | Path) -> dict:
    return json.loads((Path(prepared_dir) / MANIFEST).read_text())


def _stage(out: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` in a fresh sibling temp folder of `out` and return it (removed again
    if `build` fails)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _commit(tmp: Path, out: Path) -> None:
    """Rename a staged folder to `out`; if another process renamed its identical result into
    place first, that one is kept and ours discarded."""
    try:
        os.rename(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / MANIFEST).is_file():
            raise


def atomic_prepare(out: Path, build: Callable[[Path], None]) -> Path:
    """Build `out` in a temp folder and rename it into place: on failure `out` is untouched."""
    _commit(_stage(out, build), out)
    return out


_RECORD_COLUMNS = ("pid", "split", "kind", "image", "question", "choices", "answer_index",
                   "hint", "lecture", "meta")


def read_split_table(prepared_dir: str | Path, split: str, columns: list[str] | None = None) -> pa.Table:
    """One prepared split, with a clear error if the file or a required column is missing."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    file = Path(prepared_dir) / f"{split}.parquet"
    if not file.is_file():
        raise DataError(file, "prepared split file is missing (run ensure_prepared / prepare first)")
    have = set(pq.read_schema(file).names)
    for name in columns or SCHEMA.names:
        if name not in have:
            raise DataError(file, "required column is missing", field=name)
    return pq.read_table(file, columns=columns)


def read_records(prepared_dir: str | Path, split: str) -> list[Record]:
    """The records of a prepared split (the inverse of write_prepared, for checks and tests)."""
    t = read_split_table(prepared_dir, split, list(_RECORD_COLUMNS)).to_pydict()
    return [Record(pid=t["pid"][i], split=t["split"][i], kind=t["kind"][i], question=t["question"][i],
                   choices=tuple(t["choices"][i]), answer_index=t["answer_index"][i], hint=t["hint"][i],
                   lecture=t["lecture"][i], image=t["image"][i],
                   meta=tuple(sorted(json.loads(t["meta"][i]).items())))
            for i in range(len(t["pid"]))]


def cache_key(fingerprint: str) -> str:
    """Source fingerprint + everything that shapes the prepared rows (format, prompt rules)."""
    spec = f"{FORMAT_VERSION}\0{CONTEXT_MAX_WORDS}\0{fingerprint}"
    return hashlib.sha256(spec.encode()).hexdigest()


def _prepared_dir(benchmark: str, cache_dir: str | Path, key: str) -> tuple[Path, bool]:
    """(where a benchmark's prepared folder goes, whether it is already there and current).
    Reads only: a folder holding anything else is an error, never deleted (another trial may
    be reading it; our folders appear by atomic rename, complete)."""
    out = Path(cache_dir).expanduser() / f"{benchmark}-{key[:12]}"
    if (out / MANIFEST).is_file() and read_manifest(out).get("source_hash") == key:
        return out, True
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists but holds no prepared data for this source; remove it")
    return out, False


Request = tuple[str, "str | Path | None", "str | Path"]
"""(benchmark, data_root, cache_dir) of one benchmark to prepare."""


def prepare_all(requests: list[Request]) -> list[Path]:
    """The prepared folders of several benchmarks, all or nothing: each missing one is read and
    validated before anything is created, then written to a temp folder, and only when every
    one succeeded are they renamed into place. On any error the temp folders, and the cache
    folders this call created, are removed: a data error in the second benchmark leaves no
    trace of the first. A current folder (same source hash) is reused without reading."""
    from trainables.data.sources import resolve_source  # sources imports the loaders

    targets = []
    for benchmark, data_root, cache_dir in requests:
        source = resolve_source(benchmark, data_root)
        key = cache_key(source.fingerprint)
        targets.append((benchmark, source, key, *_prepared_dir(benchmark, cache_dir, key)))
    made = {out.parent: _first_missing(out.parent) for *_, out, current in targets if not current}
    staged: list[tuple[Path, Path]] = []
    try:
        for benchmark, source, key, out, current in targets:
            if current:
                continue
            records = source.load()  # raises DataError; nothing was created before this
            check_unique_pids(records, source.description)
            check_splits(records, source.description)
            staged.append((_stage(out, lambda tmp, records=records, benchmark=benchmark,
                                  source=source, key=key: write_prepared(
                records, tmp, benchmark=benchmark, source=source.description,
                source_hash=key)), out))
    except BaseException:
        for tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True)
        for leaf, top in made.items():
            if top is not None:
                _remove_empty(leaf, top)
        raise
    for tmp, out in staged:
        _commit(tmp, out)
    return [out for *_, out, _ in targets]


def _first_missing(path: Path) -> Path | None:
    """The top-most missing folder on the way to `path` (None: `path` exists)."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _remove_empty(leaf: Path, top: Path) -> None:
    """Remove `leaf` and its parents up to `top`, each only while empty: the folders a failed
    preparation created, never anything another process put there meanwhile."""
    while True:
        try:
            leaf.rmdir()
        except OSError:
            return
        if leaf == top:
            return
        leaf = leaf.parent


def ensure_prepared(benchmark: str, *, data_root: str | Path | None = None, cache_dir: str | Path) -> Path:
    """The prepared folder of a benchmark, `cache_dir/<benchmark>-<hash12>/`: validated and
    written on first use, reused afterwards while the manifest's source hash matches. Bad
    data leaves no folder (not even `cache_dir`) behind."""
    return prepare_all([(benchmark, data_root, cache_dir)])[0]
