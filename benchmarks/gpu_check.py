"""One prepared GPU check (<= 8 minutes on one GPU): real-size steps, memory vs plan, scoring.

    python -m benchmarks.gpu_check [--device cuda] [--steps 3] [--deadline-s 450]

On one GPU, for Flan-T5-XL and Vicuna-7B at full size with deterministic random bf16 weights
(``random_weights``; nothing downloaded), for the baseline and both_lora/all r8:
- each configuration in its own process (its own CUDA peak): the trial is built with
  ``activation_checkpointing="auto"`` and the whole GPU as its budget, so the micro-batch,
  checkpointing and scoring batch are the ones trainables.memory fits (the recipe's 16 x 1 /
  8 x 2 where they fit); ``--steps`` optimizer steps on sample-iconqa's real images and prompts;
- measured peak (allocator reserved peak + what the device holds outside it) / planned peak,
  median step time, samples/s, MFU against the device's dense bf16 peak (planner FLOPs);
- batched, prefix-sharing scoring vs one forward per candidate (trainables.scoring
  score_in_batches vs score_naive) on the same problems: the speedup.
Configurations left when ``--deadline-s`` is near are skipped and named. Ends with ONE JSON line,
ratios first. ``--device cpu --llm tiny-t5`` runs the same flow on CPU with a toy preset (the
test of this script); GPU figures only come from a GPU.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch

from benchmarks.real_size_step import child_config, mfu, run_child
from trainables.defaults import recipe_for
from trainables.methods import PeftSetup
from trainables.vocab import PRESETS

METHODS = (PeftSetup("baseline", "none", 0), PeftSetup("both_lora", "all", 8))
SCORING_PROBLEMS = 8


def scoring_speedup(config: dict[str, Any], device: str) -> dict[str, Any]:
    """In this process: batched prefix-shared scoring vs one forward per candidate."""
    from trainables.config import TrialConfig
    from trainables.loop import build_trial
    from trainables.scoring import score_candidates, score_naive
    cfg = TrialConfig.from_dict(config)
    dev = torch.device(device)
    trial = build_trial(cfg, dev)
    problems = (trial.splits["val"] * SCORING_PROBLEMS)[:SCORING_PROBLEMS]
    pixels = trial.vision.eval_inputs(problems)
    times = {}
    for name, fn in (("batched", score_candidates), ("per_candidate", score_naive)):
        fn(trial.model, problems[:1], pixels[:1], trial.spec, trial.precision)  # warm-up
        _sync(dev)
        start = time.perf_counter()
        result = fn(trial.model, problems, pixels, trial.spec, trial.precision)
        _sync(dev)
        times[name] = (time.perf_counter() - start, result.predictions)
    return {"llm": cfg.llm, "batched_s": times["batched"][0], "per_candidate_s": times["per_candidate"][0],
            "speedup": times["per_candidate"][0] / times["batched"][0],
            "same_predictions": times["batched"][1] == times["per_candidate"][1],
            "candidates": sum(len(p.candidate_ids) for p in problems)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _scoring_child(config: dict, device: str, timeout: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--scoring-child", json.dumps(config), "--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"scoring {config['llm']}: child failed\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def budget_bytes(device: str) -> int | None:
    return torch.cuda.get_device_properties(torch.device(device)).total_memory if device.startswith("cuda") else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    start, steps_out, scoring, skipped = time.monotonic(), [], [], []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as cache:
        for llm in args.llm or ["flan-t5-xl", "vicuna-7b"]:
            batch = recipe_for(llm).batch_size
            for peft in METHODS:
                if time.monotonic() - start > args.deadline_s:
                    skipped.append(f"{llm} {peft.row_label}")
                    continue
                # the recipe's micro-batch and effective batch 16: fitting may shrink the former
                config = child_config(llm, peft, batch, cache, None, "auto", grad_accum=16 // batch)
                steps_out.append(run_child(config, args.device, args.steps, args.timeout, budget_bytes(args.device)))
            if time.monotonic() - start > args.deadline_s:
                skipped.append(f"{llm} scoring")
                continue
            config = child_config(llm, METHODS[-1], SCORING_PROBLEMS, cache, None, checkpointing="auto")
            scoring.append(_scoring_child(config, args.device, args.timeout))
    return {"steps": steps_out, "scoring": scoring, "skipped": skipped, "wall_s": time.monotonic() - start}


def summary(out: dict[str, Any]) -> dict[str, Any]:
    """The one JSON line: peak/plan ratios and scoring speedups first, then speed and MFU."""
    line: dict[str, Any] = {}
    for r in out["steps"]:
        key = f"{r['llm']}|{r['row'].replace(' ', '')}|r{r['rank']}"
        line[f"peak_over_plan:{key}"] = round(r["peak_bytes"] / r["est_peak_bytes"], 4)
    for s in out["scoring"]:
        line[f"scoring_speedup:{s['llm']}"] = round(s["speedup"], 3)
    for r in out["steps"]:
        key = f"{r['llm']}|{r['row'].replace(' ', '')}|r{r['rank']}"
        line[f"setting:{key}"] = (f"{r['batch']}x{16 // r['batch']}" + ("+ck" if r["activation_checkpointing"] else "")
                                  + f" e{r['eval_batch']}")
        line[f"samples_per_s:{key}"] = round(r["samples_per_s"], 3)
        line[f"mfu:{key}"] = None if mfu(r) is None else round(mfu(r), 4)
        line[f"peak_gib:{key}"] = round(r["peak_bytes"] / 2**30, 2)
    line.update(device=out["steps"][0]["gpu_name"] or "cpu" if out["steps"] else None,
                skipped=out["skipped"], wall_s=round(out["wall_s"], 1))
    return line


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--llm", action="append", choices=PRESETS, help="default flan-t5-xl and vicuna-7b")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--deadline-s", type=float, default=450.0,
                   help="start no new configuration after this many seconds (default 450: <= 8 min)")
    p.add_argument("--timeout", type=int, default=300, help="seconds per configuration")
    p.add_argument("--scoring-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.scoring_child:
        print(json.dumps(scoring_speedup(json.loads(args.scoring_child), args.device)), flush=True)
        return {}
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device here; this check needs one GPU (--device cpu --llm tiny-t5 checks the flow)")
    out = run(args)
    for r in out["steps"]:
        print(f"{r['llm']:<11} {r['row']:<16} r{r['rank']}  peak {r['peak_bytes'] / 2**30:6.2f} GiB  plan "
              f"{r['est_peak_bytes'] / 2**30:6.2f} GiB  step {r['step_s']:.2f} s  {r['samples_per_s']:.2f} samples/s")
    for s in out["scoring"]:
        print(f"{s['llm']:<11} scoring {s['candidates']} candidates: batched {s['batched_s']:.2f} s, per candidate "
              f"{s['per_candidate_s']:.2f} s ({s['speedup']:.1f}x), same predictions: {s['same_predictions']}")
    line = summary(out)
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
