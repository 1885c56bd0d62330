"""Orchestration overhead of a sweep: wall time vs. the time its trials actually trained.

    overhead = sweep wall time / (sum of trial times / concurrency)

1.0 means the cluster was never idle and the driver cost nothing; the target is <= 1.10. Each
space runs as a real CLI sweep (`python -m orchestrator.sweep --space NAME`, offline stand-ins,
fresh storage and MLflow store in a temp dir, `--max-concurrent` fixed). Trial time is Tune's
time_total_s of each trial (grid and retunes). Two walls are reported:
  sweep wall   -- the grid + retune phase as the sweep's summary measures it (Ray started,
                  data prepared: what orchestration adds while trials run);
  process wall -- the whole command (imports, data preparation, ray.init, MLflow, report).

    python -m benchmarks.sweep_overhead [--spaces smoke full_grid] [--max-concurrent 2]
Ends with one JSON line: ratios first.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def trial_records(storage: Path) -> list[dict[str, Any]]:
    """Per trial of every experiment under ``storage``: config, last result, epochs reported."""
    out = []
    for result in sorted(storage.glob("*/*/result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        params = json.loads((result.parent / "params.json").read_text())
        out.append({"experiment": result.parent.parent.name, "config": params, "last": rows[-1],
                    "epochs": max(int(r.get("epoch") or 0) for r in rows),
                    "best_val_acc": max(float(r.get("best_val_acc") or 0) for r in rows)})
    return out


def run_sweep(space: str, workdir: Path, *extra: str) -> dict[str, Any]:
    """One CLI sweep in ``workdir``; returns its walls and trial records."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "orchestrator.sweep", "--space", space,
           "--storage", str(workdir / "rr"), "--tracking-uri", f"sqlite:///{workdir}/mlflow.db",
           "--cache-dir", str(workdir / "cache"), "--report-dir", str(workdir / "report"), *extra]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    process_wall = time.monotonic() - start
    (workdir / "stdout.txt").write_text(proc.stdout)
    (workdir / "stderr.txt").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"sweep {space} failed ({proc.returncode}); see {workdir}/stderr.txt")
    match = re.search(r"wall time (\d+) s", proc.stdout)
    summary = proc.stdout[proc.stdout.index("=" * 30 + " sweep summary"):]
    return {"process_wall_s": process_wall, "sweep_wall_s": float(match.group(1)),
            "trials": trial_records(workdir / "rr"), "summary": summary}


def overhead(run: dict[str, Any], concurrency: int) -> dict[str, float]:
    busy = sum(float(t["last"].get("time_total_s") or 0) for t in run["trials"])
    ideal = busy / concurrency
    return {"overhead": run["sweep_wall_s"] / ideal, "overhead_process": run["process_wall_s"] / ideal,
            "sweep_wall_s": run["sweep_wall_s"], "process_wall_s": run["process_wall_s"],
            "sum_trial_s": busy, "trials": len(run["trials"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spaces", nargs="+", default=["smoke", "full_grid"])
    parser.add_argument("--max-concurrent", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", help="keep the runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="sweep_overhead_"))
    figures: dict[str, dict[str, float]] = {}
    for space in args.spaces:
        run = run_sweep(space, root / space, "--max-concurrent", str(args.max_concurrent))
        figures[space] = overhead(run, args.max_concurrent)
        f = figures[space]
        print(f"{space}: {f['trials']} trials, sum of trial times {f['sum_trial_s']:.0f} s over "
              f"{args.max_concurrent} slots; sweep wall {f['sweep_wall_s']:.0f} s -> overhead "
              f"{f['overhead']:.3f}; whole command {f['process_wall_s']:.0f} s -> "
              f"{f['overhead_process']:.3f}")
    result = {f"overhead_{s}": round(f["overhead"], 3) for s, f in figures.items()}
    result.update({f"overhead_process_{s}": round(f["overhead_process"], 3) for s, f in figures.items()})
    result.update({f"{k}_{s}": round(v, 1) for s, f in figures.items() for k, v in f.items()
                   if k not in ("overhead", "overhead_process")})
    result.update({"max_concurrent": args.max_concurrent, "workdir": str(root)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
