"""Grouped ASHA vs FIFO on the same grid: how much training ASHA saves, and what it changes.

Runs the space twice as real CLI sweeps (offline stand-ins, --no-retune so both see exactly
the grid): --scheduler asha and --scheduler fifo. Reports
  epochs_ratio   = total trial-epochs under FIFO / under ASHA (target >= 3),
  wall_ratio     = FIFO sweep wall / ASHA sweep wall,
  same_best      = per (benchmark, LLM) group, whether both pick the same best cell (by best
                   validation accuracy, the paper's model selection).

    python -m benchmarks.asha_vs_fifo [--space full_grid] [--max-concurrent 2]
Ends with one JSON line: ratios first.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.sweep_overhead import run_sweep


def cell(config: dict[str, Any]) -> str:
    return f"{config['method']}/{config['sublayer']}|r{config['rank']}"


def best_per_group(trials: list[dict[str, Any]]) -> dict[str, tuple[str, float]]:
    best: dict[str, tuple[str, float]] = {}
    for t in trials:
        group = f"{t['config']['benchmark']}|{t['config']['llm']}"
        if group not in best or t["best_val_acc"] > best[group][1]:
            best[group] = (cell(t["config"]), t["best_val_acc"])
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="full_grid")
    parser.add_argument("--max-concurrent", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", help="keep the runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="asha_vs_fifo_"))
    runs = {kind: run_sweep(args.space, root / kind, "--scheduler", kind, "--no-retune",
                            "--max-concurrent", str(args.max_concurrent))
            for kind in ("asha", "fifo")}
    epochs = {k: sum(t["epochs"] for t in r["trials"]) for k, r in runs.items()}
    best = {k: best_per_group(r["trials"]) for k, r in runs.items()}
    same = {g: best["asha"][g][0] == best["fifo"][g][0] for g in best["fifo"]}
    for g in sorted(best["fifo"]):
        print(f"{g}: FIFO best {best['fifo'][g][0]} ({100 * best['fifo'][g][1]:.1f}), ASHA best "
              f"{best['asha'][g][0]} ({100 * best['asha'][g][1]:.1f}) -> same: {same[g]}")
    print(f"trial-epochs: FIFO {epochs['fifo']}, ASHA {epochs['asha']}; sweep wall: FIFO "
          f"{runs['fifo']['sweep_wall_s']:.0f} s, ASHA {runs['asha']['sweep_wall_s']:.0f} s")
    print(json.dumps({
        "epochs_ratio": round(epochs["fifo"] / max(epochs["asha"], 1), 2),
        "wall_ratio": round(runs["fifo"]["sweep_wall_s"] / max(runs["asha"]["sweep_wall_s"], 1), 2),
        "same_best_groups": sum(same.values()), "groups": len(same), "same_best": same,
        "trial_epochs_fifo": epochs["fifo"], "trial_epochs_asha": epochs["asha"],
        "sweep_wall_fifo_s": runs["fifo"]["sweep_wall_s"],
        "sweep_wall_asha_s": runs["asha"]["sweep_wall_s"], "space": args.space,
        "max_concurrent": args.max_concurrent, "workdir": str(root)}))


if __name__ == "__main__":
    main()
