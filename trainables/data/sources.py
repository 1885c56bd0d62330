"""Where each benchmark's records come from, and the hash that decides when to re-prepare.

- synth-*: generated from SYNTH_SEED / SYNTH_SPLIT_SIZES (defaults.py) into the official
  layout, then read by the official loaders; hashed by generator inputs.
- sample-*: the real samples shipped in trainables/assets/data/; hashed by file contents.
- scienceqa / iconqa: `data_root`, an official layout or (ScienceQA) a hub parquet export,
  detected from the files present; hashed by the relative path, size and mtime of every file
  (cheap for 30k images; touching a file re-prepares).
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainables.data.errors import DataError
from trainables.data.hf_parquet import is_hf_parquet_root, load_hf_scienceqa
from trainables.data.iconqa import is_iconqa_root, load_iconqa
from trainables.data.records import Record
from trainables.data.scienceqa import is_scienceqa_root, load_scienceqa
from trainables.data.synth import write_synth
from trainables.defaults import SYNTH_SEED, SYNTH_SPLIT_SIZES
from trainables.vocab import BENCHMARKS, REAL_BENCHMARKS, SAMPLE_BENCHMARKS, check_choice

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "data"
SYNTH_VERSION = 5
"""Bump when the generator changes so cached synthetic data is regenerated."""


@dataclass(frozen=True)
class Source:
    """A benchmark's records, resolved but not yet read."""

    benchmark: str
    description: str
    """Human-readable origin written to the manifest (a path, or the synth seed)."""
    fingerprint: str
    """Hash of what the records are made from; part of the cache folder name."""
    load: Callable[[], list[Record]]
    """Reads and validates every record (raises DataError)."""


def _tree_fingerprint(root: Path, with_content: bool) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest() if with_content else str(st.st_mtime_ns).encode())
    return h.hexdigest()


def loader_for(kind: str, root: Path) -> tuple[str, Callable[[], list[Record]]]:
    """(layout name, loader) for a data root; one clear error when the layout is not recognised."""
    if kind == "scienceqa" and is_scienceqa_root(root):
        return "official", lambda: load_scienceqa(root)
    if kind == "iconqa" and is_iconqa_root(root):
        return "official", lambda: load_iconqa(root)
    if kind == "scienceqa" and is_hf_parquet_root(root):
        return "hf-parquet", lambda: load_hf_scienceqa(root)
    expected = ("problems.json + pid_splits.json + images/, or *.parquet shards of the hub export"
                if kind == "scienceqa" else "iconqa_data/iconqa/<split>/choose_txt/ (+ index files)")
    raise DataError(root, f"not a {kind} data root: expected {expected}")


def _synth_load(benchmark: str) -> list[Record]:
    kind = benchmark.removeprefix("synth-")
    with tempfile.TemporaryDirectory(prefix=f"{benchmark}-") as tmp:
        write_synth(benchmark, tmp, SYNTH_SEED, SYNTH_SPLIT_SIZES)
        return loader_for(kind, Path(tmp))[1]()


def resolve_source(benchmark: str, data_root: str | Path | None) -> Source:
    """The Source of a benchmark name (vocab.BENCHMARKS); real ones need data_root."""
    check_choice("benchmark", benchmark, BENCHMARKS)
    kind = benchmark.split("-")[-1]
    if benchmark.startswith("synth-"):
        spec = json.dumps([SYNTH_VERSION, benchmark, SYNTH_SEED, SYNTH_SPLIT_SIZES], sort_keys=True)
        return Source(benchmark, f"generated: seed={SYNTH_SEED} sizes={SYNTH_SPLIT_SIZES}",
                      hashlib.sha256(spec.encode()).hexdigest(), lambda: _synth_load(benchmark))
    if benchmark in SAMPLE_BENCHMARKS:
        root = ASSETS / kind
        _, load = loader_for(kind, root)
        return Source(benchmark, f"shipped sample {root}", _tree_fingerprint(root, True), load)
    assert benchmark in REAL_BENCHMARKS
    if data_root is None:
        raise ValueError(f"benchmark {benchmark!r} needs data_root (the official layout folder"
                         f"{' or the hub parquet folder' if kind == 'scienceqa' else ''})")
    root = Path(data_root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(root, "data_root is not a folder")
    layout, load = loader_for(kind, root)
    return Source(benchmark, f"{layout}: {root}", _tree_fingerprint(root, False), load)
