"""Candidate-scoring throughput: batched, prefix-shared scorer vs naive scoring.

    python -m benchmarks.scoring_throughput [--presets small-t5 small-llama] [--problems 32] [--threads 1] [--rounds 3]

On each preset (tens of millions of parameters, both_lora r4 applied) and a benchmark
(default synth-scienceqa; ``--benchmark sample-scienceqa`` scores the shipped real ScienceQA
problems with their real context lengths and 2-5 options), all splits pooled, it scores the same
problems three ways, side by side in one run:
- shared: ``score_candidates``, ``eval_batch_size`` problems per call, vision/Q-Former/prompt
  computed once per problem (T5 encoder once; LLaMA prefix KV cache shared by the candidates);
- per_problem: one problem at a time, its candidates batched as separate full forwards
  (``score_unshared``), the prefix recomputed per candidate;
- per_candidate: one full forward per candidate, batch size 1 (``score_naive``; the authors'
  evaluation ran with batch size 1).
Prints one line per preset and ends with one JSON line (ratios first). Picks must be identical.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable

import torch

from trainables.batching import TokenSpec, encode_examples, stack_images
from trainables.data.examples import load_examples
from trainables.data.images import ImageTransform
from trainables.data.prepare import ensure_prepared
from trainables.defaults import recipe_for
from trainables.families import family_spec
from trainables.methods import PeftSetup
from trainables.peft_targeting import apply_method
from trainables.presets import build_model
from trainables.scoring import ScoreResult, score_in_batches, score_naive, score_unshared
from trainables.step import resolve_precision


def _timed(fn: Callable[[], list[ScoreResult]]) -> tuple[float, list[int]]:
    start = time.perf_counter()
    results = fn()
    return time.perf_counter() - start, [p for r in results for p in r.predictions]


def bench_preset(preset: str, benchmark: str, n_problems: int, cache_dir: str, device: str,
                 rounds: int) -> dict:
    bundle = build_model(preset, seed=0, device=device)
    torch.manual_seed(0)
    model = apply_method(bundle.model, PeftSetup("both_lora", "all", 4), family_spec(bundle.family))
    prepared = ensure_prepared(benchmark, cache_dir=cache_dir)
    examples = [e for split in ("train", "val", "test")
                for e in load_examples(prepared, split, bundle.image_size)][:n_problems]
    problems = encode_examples(examples, bundle, recipe_for(preset).max_prompt_tokens)
    transform = ImageTransform(bundle.image_size, bundle.image_mean, bundle.image_std, augment=False)
    pixels = transform(stack_images(problems), train=False).to(device)
    spec, precision = TokenSpec.from_bundle(bundle), resolve_precision("auto", device)
    batch = recipe_for(preset).eval_batch_size if preset.startswith("small") else 16
    index = range(len(problems))

    position = {id(p): i for i, p in enumerate(problems)}

    def shared() -> list[ScoreResult]:
        return [score_in_batches(model, problems, lambda chunk: pixels[[position[id(p)] for p in chunk]],
                                 spec, precision, batch)]

    def per_problem() -> list[ScoreResult]:
        return [score_unshared(model, [problems[i]], pixels[i: i + 1], spec, precision) for i in index]

    def per_candidate() -> list[ScoreResult]:
        return [score_naive(model, problems, pixels, spec, precision)]

    shared()  # warm-up (allocator, lazy init)
    # Rounds interleave the three scorers and keep each one's fastest time, so that load from
    # other processes on a shared machine distorts the ratios as little as possible.
    best = {"shared": float("inf"), "per_problem": float("inf"), "per_candidate": float("inf")}
    picks = {}
    for _ in range(rounds):
        for name, fn in (("shared", shared), ("per_problem", per_problem), ("per_candidate", per_candidate)):
            seconds, picks[name] = _timed(fn)
            best[name] = min(best[name], seconds)
    t_shared, t_problem, t_cand = best["shared"], best["per_problem"], best["per_candidate"]
    p_shared, p_problem, p_cand = picks["shared"], picks["per_problem"], picks["per_candidate"]
    n_cand = sum(len(p.candidate_ids) for p in problems)
    params = sum(p.numel() for p in model.parameters())
    return {"preset": preset, "benchmark": benchmark, "params_m": round(params / 1e6, 1), "problems": len(problems),
            "candidates": n_cand, "precision": precision.name,
            "speedup_vs_per_problem": round(t_problem / t_shared, 2),
            "speedup_vs_per_candidate": round(t_cand / t_shared, 2),
            "candidates_per_s_shared": round(n_cand / t_shared, 1),
            "candidates_per_s_per_problem": round(n_cand / t_problem, 1),
            "candidates_per_s_per_candidate": round(n_cand / t_cand, 1),
            "identical_picks": p_shared == p_problem == p_cand}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scoring_throughput")
    parser.add_argument("--presets", nargs="+", default=["small-t5", "small-llama"])
    parser.add_argument("--benchmark", default="synth-scienceqa",
                        help="embedded benchmark whose problems (all splits) are scored")
    parser.add_argument("--problems", type=int, default=32, help="at most this many problems")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds; the fastest counts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for preset in args.presets:
            row = bench_preset(preset, args.benchmark, args.problems, cache, args.device, args.rounds)
            print(row, flush=True)
            rows.append(row)
    summary = {f"{r['preset']}_{k}": r[k] for r in rows for k in ("speedup_vs_per_problem", "speedup_vs_per_candidate")}
    summary.update({f"{r['preset']}_{k}": r[k] for r in rows for k in r
                    if k not in ("preset", "benchmark", "speedup_vs_per_problem", "speedup_vs_per_candidate")})
    summary["benchmark"] = args.benchmark
    summary["device"] = args.device
    summary["threads"] = args.threads
    summary["rounds"] = args.rounds
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
