"""The frozen-ViT feature cache: a training epoch without augmentation and val+test scoring,
with vs without the cache, side by side in one run.

    python -m benchmarks.vit_cache [--preset xlsplit-t5] [--benchmark synth-iconqa] [--train 64]
                                   [--eval 96] [--threads 1] [--rounds 2]

Two trials of the same cell (both_lora r4, seed 0, augmentation off) are built: one feeds pixels
(the ViT runs in every step and every scoring call), one the node cache's features (filled once
at build time, timed separately as ``fill_s``: a node pays it once for every trial and epoch).
Each round trains one epoch on each (the same data order), then copies the pixel trial's weights
into the cached one (so both score the same model) and scores val + test with each. The fastest
round counts. Checked: the per-step training losses agree within fp32 rounding (rel 1e-4; the
vision features are identical, only the summation order of batched matmuls can differ), and the
predicted answers are identical.

The preset's FLOP split (ViT : Q-Former : LLM per problem, training and scoring) is measured here
on the run's own problems and on Flan-T5-XL (benchmarks.flop_split) and printed with the largest
relative deviation of any part. Ends with one JSON line, ratios first.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable

import torch

from benchmarks import flop_split
from trainables.batching import stack_images
from trainables.checkpoint import load_trainable_state, trainable_state
from trainables.config import TrialConfig
from trainables.loop import Trial, build_trial, evaluate, train_epoch
from trainables.scoring import ScoreResult
from trainables.step import make_optimizer

LOSS_RTOL = 1e-4


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _build(args: argparse.Namespace, cache: bool, root: str) -> tuple[float, Trial]:
    cfg = TrialConfig.from_dict({
        "method": "both_lora", "sublayer": "all", "rank": 4, "llm": args.preset, "benchmark": args.benchmark,
        "augment": False, "vit_cache": cache, "vit_cache_dir": root, "seed": 0, "num_threads": args.threads,
        "max_train_examples": args.train, "max_eval_examples": args.eval, "precision": "fp32",
        "weight_dtype": "fp32"})
    return _timed(lambda: build_trial(cfg))


def _score(trial: Trial) -> list[ScoreResult]:
    return [evaluate(trial, "val")[1], evaluate(trial, "test")[1]]


def _split_report(trial: Trial) -> dict:
    """Measured FLOP split of the preset (on 8 of the run's problems) and of Flan-T5-XL."""
    problems = trial.splits["val"][:8]
    pixels = trial.transform(stack_images(problems), train=False)
    mine = flop_split.toy_split(trial.bundle, trial.model, problems, pixels)
    xl = flop_split.real_split("flan-t5-xl")
    out, worst = {}, 0.0
    for phase in ("train", "score"):
        a, b = mine[phase].shares(), xl[phase].shares()
        worst = max(worst, *(abs(a[k] / b[k] - 1) for k in a))
        out[phase] = {"preset": {k: round(v, 4) for k, v in a.items()},
                      "flan-t5-xl": {k: round(v, 4) for k, v in b.items()}}
    return {"max_rel_dev": round(worst, 4), **out}


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="vit-cache-bench-") as root:
        build_pix, pix = _build(args, cache=False, root=root)
        build_cached, cached = _build(args, cache=True, root=root)
        opts = {id(t): make_optimizer(t.model, t.cfg.lr, t.cfg.weight_decay) for t in (pix, cached)}
        best = {"train_pixels": 1e9, "train_cached": 1e9, "score_pixels": 1e9, "score_cached": 1e9}
        loss_dev, identical = 0.0, True
        for epoch in range(args.rounds):
            t_pix, (loss_pix, _) = _timed(lambda e=epoch: train_epoch(pix, opts[id(pix)], e))
            t_cached, (loss_cached, _) = _timed(lambda e=epoch: train_epoch(cached, opts[id(cached)], e))
            loss_dev = max(loss_dev, *(abs(a - b) / abs(a) for a, b in zip(loss_pix, loss_cached)))
            load_trainable_state(cached.model, trainable_state(pix.model))
            s_pix, scored_pix = _timed(lambda: _score(pix))
            s_cached, scored_cached = _timed(lambda: _score(cached))
            identical &= all(a.predictions == b.predictions for a, b in zip(scored_pix, scored_cached))
            for key, seconds in (("train_pixels", t_pix), ("train_cached", t_cached),
                                 ("score_pixels", s_pix), ("score_cached", s_cached)):
                best[key] = min(best[key], seconds)
            print(f"round {epoch}: train {t_pix:.2f}s -> {t_cached:.2f}s, val+test {s_pix:.2f}s -> "
                  f"{s_cached:.2f}s", flush=True)
        metrics = cached.vision.metrics()
    split = _split_report(pix) if args.split else None
    return {
        "train_epoch_speedup": round(best["train_pixels"] / best["train_cached"], 3),
        "val_test_scoring_speedup": round(best["score_pixels"] / best["score_cached"], 3),
        "predictions_identical": identical, "losses_equal": loss_dev <= LOSS_RTOL,
        "max_loss_rel_diff": float(f"{loss_dev:.3g}"),
        **{f"{k}_s": round(v, 3) for k, v in best.items()},
        "fill_s": round(build_cached - build_pix, 3),
        "cache_hits": int(metrics["vit_cache_hits"]), "cache_misses": int(metrics["vit_cache_misses"]),
        "flop_split": split, "preset": args.preset, "benchmark": args.benchmark,
        "problems": {s: len(p) for s, p in pix.splits.items()}, "threads": args.threads,
        "rounds": args.rounds, "precision": pix.precision.name,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vit_cache", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="xlsplit-t5")
    p.add_argument("--benchmark", default="synth-iconqa")
    p.add_argument("--train", type=int, default=64, help="training problems (one epoch)")
    p.add_argument("--eval", type=int, default=96, help="val and test problems each")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="timing rounds; the fastest counts")
    p.add_argument("--no-split", dest="split", action="store_false",
                   help="skip measuring the FLOP split (~1 min for Flan-T5-XL's fake-tensor count)")
    result = run(p.parse_args(argv))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
