"""Training throughput (samples/s) per method of the paper's table, side by side in one run.

    python -m benchmarks.train_throughput [--presets tiny-t5 tiny-llama] [--steps 3] [--rounds 3] [--threads 1]

For each preset and each Table-1 row (rank 4 for the LoRA rows) it builds the model, applies
the method and times ``train_step`` (effective batch = the preset recipe's batch x accumulation)
on synth-scienceqa training problems, after one warm-up step, best of interleaved rounds. Ends with one JSON line: the
ratios to the baseline's throughput first, then samples/s.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable

import torch

from trainables.batching import TokenSpec, collate_train, encode_examples, stack_images
from trainables.data.examples import load_examples
from trainables.data.images import ImageTransform
from trainables.data.prepare import ensure_prepared
from trainables.defaults import recipe_for
from trainables.families import family_spec
from trainables.methods import METHODS, PeftSetup, table_rows
from trainables.peft_targeting import apply_method
from trainables.presets import build_model
from trainables.step import make_optimizer, resolve_precision, train_step


def rows() -> list[PeftSetup]:
    """Every Table-1 row at rank 4 (rank 0 without LoRA)."""
    return [PeftSetup(m, s, 4 if METHODS[m].has_lora else 0) for m, s in table_rows()]


def make_runner(preset: str, peft: PeftSetup, cache: str, device: str) -> Callable[[], int]:
    """A closure doing one optimizer step of ``peft`` on ``preset``; returns samples trained."""
    recipe = recipe_for(preset)
    bundle = build_model(preset, seed=0, device=device)
    torch.manual_seed(0)
    model = apply_method(bundle.model, peft, family_spec(bundle.family))
    model.train()
    prepared = ensure_prepared("synth-scienceqa", cache_dir=cache)
    n = recipe.batch_size * recipe.grad_accum
    problems = encode_examples(load_examples(prepared, "train", bundle.image_size, n), bundle,
                               recipe.max_prompt_tokens)
    transform = ImageTransform(bundle.image_size, bundle.image_mean, bundle.image_std, augment=True)
    spec, precision = TokenSpec.from_bundle(bundle), resolve_precision("auto", device)
    gen = torch.Generator().manual_seed(0)
    optimizer = make_optimizer(model, 1e-4, recipe.weight_decay)

    def step() -> int:
        parts = [problems[i: i + recipe.batch_size] for i in range(0, n, recipe.batch_size)]
        micro = [collate_train(p, transform(stack_images(p), train=True, generator=gen), spec).to(device)
                 for p in parts]
        return train_step(model, micro, optimizer, precision).samples

    step()  # warm-up
    return step


def bench(preset: str, steps: int, rounds: int, cache: str, device: str) -> dict[str, float]:
    """samples/s per method; rounds interleave the methods and keep each one's fastest round,
    so that load from other processes on a shared machine distorts the comparison less."""
    runners = {f"{preset}|{p.method}/{p.sublayer}": make_runner(preset, p, cache, device)
               for p in rows()}
    best = {key: 0.0 for key in runners}
    for _ in range(rounds):
        for key, step in runners.items():
            start = time.perf_counter()
            samples = sum(step() for _ in range(steps))
            best[key] = max(best[key], samples / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput")
    parser.add_argument("--presets", nargs="+", default=["tiny-t5", "tiny-llama"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds; the fastest counts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    speed: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        for preset in args.presets:
            for key, value in bench(preset, args.steps, args.rounds, cache, args.device).items():
                speed[key] = round(value, 1)
                print(f"{key:40s} {speed[key]:8.1f} samples/s", flush=True)
    ratios = {f"{k}_vs_baseline": round(v / speed[f"{k.split('|')[0]}|baseline/none"], 2) for k, v in speed.items()}
    print(json.dumps({**ratios, **{f"{k}_samples_per_s": v for k, v in speed.items()},
                      "device": args.device, "threads": args.threads, "rounds": args.rounds}))


if __name__ == "__main__":
    main()
