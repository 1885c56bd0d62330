"""Grouped ASHA vs FIFO on the same grid: how much training ASHA saves, and what it changes.

Runs the space twice as real CLI sweeps (offline stand-ins, --no-retune so both see exactly
the grid): --scheduler asha and --scheduler fifo. Reports
  epochs_ratio   = total trial-epochs under FIFO / under ASHA (target >= 3),
  wall_ratio     = FIFO sweep wall / ASHA sweep wall,
  same_best      = per (benchmark, LLM) group, whether ASHA's best cell (by best validation
                   accuracy, the paper's model selection) is one of FIFO's best cells -- small
                   validation sets give ties, so FIFO may have several equally best cells;
  within_se      = per group, whether ASHA's best validation accuracy is within one binomial
                   standard error sqrt(p (1 - p) / n_val) of FIFO's best p.
Both runs use the sweep's defaults (ASHA: trainables.defaults.asha_defaults).

    python -m benchmarks.asha_vs_fifo [--space full_grid] [--max-concurrent 2]
                                      [--workdir DIR [--reuse] [--only asha|fifo]]
--workdir keeps each scheduler's sweep in DIR/asha and DIR/fifo. --reuse analyses a run already
there (a run interrupted and --resume'd has no one "wall time" line: its wall is null) and runs
only the missing one. --only runs (or reuses) one scheduler's sweep and stops: the FIFO run that
records the learning curves for the scheduler replay (``scheduler_replay record --storage
DIR/fifo/rr/sweep-<space>``) is then the FIFO half of this benchmark, not a second FIFO sweep:

    python -m benchmarks.asha_vs_fifo --workdir W --only fifo     # FIFO once: curves + baseline
    python -m benchmarks.asha_vs_fifo --workdir W --reuse         # runs ASHA, compares
Ends with one JSON line: ratios first.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.sweep_overhead import run_sweep, trial_records
from orchestrator.driver.retune import val_size
from orchestrator.results.stats import binomial_se
from orchestrator.tracking.mlflow_runs import parse_config

KINDS = ("asha", "fifo")


def cell(config: dict[str, Any]) -> str:
    """The trial's cell id (trainables.cell), from its flat Ray config."""
    parsed = parse_config(config)
    if parsed is None:
        raise ValueError(f"not a trial config: {sorted(config)}")
    return parsed.cell_id


def best_per_group(trials: list[dict[str, Any]]) -> dict[str, tuple[list[str], float]]:
    """Per group: every cell tied at the best validation accuracy, and that accuracy."""
    best: dict[str, tuple[list[str], float]] = {}
    for t in trials:
        group = f"{t['config']['benchmark']}|{t['config']['llm']}"
        acc = t["best_val_acc"]
        if group not in best or acc > best[group][1]:
            best[group] = ([cell(t["config"])], acc)
        elif acc == best[group][1]:
            best[group][0].append(cell(t["config"]))
    return best


def load_or_run(kind: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """``kind``'s sweep: read back from ``root/kind`` under --reuse when it ran there, else run."""
    if args.reuse and (root / kind / "rr").is_dir():
        stdout = root / kind / "stdout.txt"  # interrupted and --resume'd: no one wall time
        walls = re.findall(r"wall time (\d+) s", stdout.read_text()) if stdout.is_file() else []
        return {"trials": trial_records(root / kind / "rr"), "reused": True,
                "sweep_wall_s": float(walls[0]) if len(walls) == 1 else None}
    run = run_sweep(args.space, root / kind, "--scheduler", kind, "--no-retune",
                    "--max-concurrent", str(args.max_concurrent))
    return {**run, "reused": False}


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Trial-epochs, walls and per-group winners of the two runs; prints one line per group."""
    epochs = {k: sum(t["epochs"] for t in r["trials"]) for k, r in runs.items()}
    best = {k: best_per_group(r["trials"]) for k, r in runs.items()}
    # ASHA's pick: its first best cell; "same" if FIFO ranks that cell best too (ties allowed).
    same = {g: best["asha"][g][0][0] in best["fifo"][g][0] for g in best["fifo"]}
    n_val = {f"{t['config']['benchmark']}|{t['config']['llm']}": val_size(parse_config(t["config"]))
             for t in runs["fifo"]["trials"]}
    se = {g: binomial_se(best["fifo"][g][1], n_val[g]) for g in best["fifo"]}
    within = {g: best["fifo"][g][1] - best["asha"][g][1] <= se[g] + 1e-12 for g in best["fifo"]}
    for g in sorted(best["fifo"]):
        print(f"{g}: FIFO best {', '.join(best['fifo'][g][0])} ({100 * best['fifo'][g][1]:.1f}); "
              f"ASHA best {', '.join(best['asha'][g][0])} ({100 * best['asha'][g][1]:.1f}) "
              f"-> same: {same[g]}, within 1 SE ({100 * se[g]:.1f}): {within[g]}")
    walls = {k: r["sweep_wall_s"] for k, r in runs.items()}
    print(f"trial-epochs: FIFO {epochs['fifo']}, ASHA {epochs['asha']}; sweep wall: FIFO "
          f"{walls['fifo']} s, ASHA {walls['asha']} s")
    return {
        "epochs_ratio": round(epochs["fifo"] / max(epochs["asha"], 1), 2),
        "wall_ratio": (round(walls["fifo"] / max(walls["asha"], 1), 2)
                       if None not in walls.values() else None),
        "same_best_groups": sum(same.values()), "within_se_groups": sum(within.values()),
        "groups": len(same), "same_best": same, "within_se": within,
        "trial_epochs_fifo": epochs["fifo"], "trial_epochs_asha": epochs["asha"],
        "sweep_wall_fifo_s": walls["fifo"], "sweep_wall_asha_s": walls["asha"],
        # a reused run was measured in another process, maybe under another load: its wall
        # compares with this one's only as far as the loads did
        "reused": sorted(k for k, r in runs.items() if r["reused"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="full_grid")
    parser.add_argument("--max-concurrent", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", help="keep the runs here (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true",
                        help="analyse the runs already in --workdir, running only the missing one")
    parser.add_argument("--only", choices=KINDS,
                        help="run (or with --reuse, reuse) only this scheduler's sweep and stop")
    args = parser.parse_args(argv)
    if (args.reuse or args.only) and not args.workdir:
        parser.error("--reuse and --only need --workdir (where the runs are kept)")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="asha_vs_fifo_"))
    if args.only:
        run = load_or_run(args.only, args, root)
        print(f"{args.only}: {len(run['trials'])} trials, "
              f"{sum(t['epochs'] for t in run['trials'])} trial-epochs, sweep wall "
              f"{run['sweep_wall_s']} s in {root / args.only}")
        return
    runs = {kind: load_or_run(kind, args, root) for kind in KINDS}
    print(json.dumps({**compare(runs), "space": args.space, "max_concurrent": args.max_concurrent,
                      "workdir": str(root)}))


if __name__ == "__main__":
    main()
