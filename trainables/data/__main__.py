"""Command line for the data layer: `python -m trainables.data COMMAND ...`.

  prepare  --benchmark B [--src DIR] --out DIR   validate and write prepared Parquet + manifest
  ensure   --benchmark B [--src DIR] --cache-dir DIR   prepare once into the cache, print the folder
  validate --benchmark B [--src DIR]             check every record, print counts per split
  synth    --benchmark synth-... --out DIR [--seed N]   write a synthetic benchmark's official layout
  show     --prepared DIR [--split S] [-n N]     print what the model is given for N problems

Bad data exits with status 2 and one line naming the file, pid and field; nothing is written.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from trainables.data.errors import DataError
from trainables.data.prepare import atomic_prepare, cache_key, ensure_prepared, read_split_table, write_prepared
from trainables.data.records import SPLITS
from trainables.data.sources import resolve_source
from trainables.data.synth import write_synth
from trainables.defaults import SYNTH_SEED, SYNTH_SPLIT_SIZES
from trainables.vocab import BENCHMARKS, SYNTH_BENCHMARKS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.data", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("prepare", "ensure", "validate"):
        s = sub.add_parser(name)
        s.add_argument("--benchmark", required=True, choices=BENCHMARKS)
        s.add_argument("--src", help="data root of a real benchmark (official layout or hub parquet)")
        if name == "prepare":
            s.add_argument("--out", required=True, type=Path)
        if name == "ensure":
            s.add_argument("--cache-dir", required=True, type=Path)
    s = sub.add_parser("synth")
    s.add_argument("--benchmark", required=True, choices=SYNTH_BENCHMARKS)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--seed", type=int, default=SYNTH_SEED)
    s = sub.add_parser("show")
    s.add_argument("--prepared", required=True, type=Path)
    s.add_argument("--split", default="train", choices=SPLITS)
    s.add_argument("-n", type=int, default=3)
    return p


def _prepare(args: argparse.Namespace) -> None:
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder; choose a new one")
    source = resolve_source(args.benchmark, args.src)
    records = source.load()  # validate everything before creating anything
    out.rmdir() if out.exists() else None
    atomic_prepare(out, lambda tmp: write_prepared(records, tmp, benchmark=args.benchmark,
                                                    source=source.description,
                                                    source_hash=cache_key(source.fingerprint)))
    print((out / "manifest.json").read_text(), end="")


def _show(args: argparse.Namespace) -> None:
    cols = ["pid", "split", "prompt", "qformer_text", "candidates", "answer_index", "target"]
    rows = read_split_table(args.prepared, args.split, cols).slice(0, args.n).to_pylist()
    for row in rows:
        print(json.dumps(row, ensure_ascii=False, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "prepare":
            _prepare(args)
        elif args.command == "ensure":
            print(ensure_prepared(args.benchmark, data_root=args.src, cache_dir=args.cache_dir))
        elif args.command == "validate":
            records = resolve_source(args.benchmark, args.src).load()
            print(json.dumps({"ok": True, "counts": dict(Counter(r.split for r in records))}))
        elif args.command == "synth":
            write_synth(args.benchmark, args.out, args.seed, SYNTH_SPLIT_SIZES)
            print(args.out)
        else:
            _show(args)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
