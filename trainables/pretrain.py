"""Pretrain a tiny stand-in and ship it: ``python -m trainables.pretrain --preset tiny-t5``.

Why: the paper adapts a *pretrained* InstructBLIP; a randomly initialised stand-in gives LoRA
nothing to adapt (frozen random LLM and ViT), so the embedded Table 1 would say nothing about
PEFT. This trains the whole tiny model (ViT, Q-Former, query tokens, projection, LLM) from its
seeded random init on trainables.pretrain_corpus (captioning + instruction-style VQA), then
scores it zero-shot on both synth benchmarks and writes ``<preset>.safetensors`` with its
manifest (trainables.pretrained) into ``--out`` (default: the shipped assets).

The inputs go through the fine-tuning code itself (batching.encode_examples / collate_train,
step.train_step), so the pretrained model has seen exactly the token layout it is fine-tuned
and scored with. Deterministic for a seed and a thread count: the corpus, the init, the batch
order and dropout are all drawn from the seed; float reductions may differ across machines, so
the shipped file is checked by its hash, and the manifest says how to rebuild it.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from trainables import defaults
from trainables.batching import EncodedProblem, TokenSpec, collate_train, encode_examples, stack_images
from trainables.data.images import ImageTransform
from trainables.presets import ModelBundle, build_model
from trainables.pretrain_corpus import OBJECTIVES, corpus_hash, downstream_image_hashes, make_corpus
from trainables.step import Precision, chunks, forward_logits, make_optimizer, set_lr, token_nll, train_step
from trainables.vocab import TINY_PRESETS, check_choice

Log = Callable[[str], None]


@dataclass
class PretrainResult:
    """A pretrained bundle and what its manifest records about the run."""

    bundle: ModelBundle
    seed: int
    recipe: defaults.PretrainRecipe
    corpus_sha256: str
    excluded_images: int
    """Downstream images the corpus must avoid (any split of either synth benchmark)."""
    steps: int
    train_loss: dict[str, list[float]]
    """Objective -> mean training loss (nats per target token) of each epoch."""
    heldout_loss: dict[str, float]
    """Objective -> token-mean loss on the held-out items after training."""
    wall_s: float


@dataclass(frozen=True)
class _Data:
    spec: TokenSpec
    transform: ImageTransform
    train: dict[str, list[EncodedProblem]]
    heldout: dict[str, list[EncodedProblem]]


def lr_at_step(recipe: defaults.PretrainRecipe, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr`` at the last step."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    frac = (step - recipe.warmup_steps) / max(1, total - recipe.warmup_steps - 1)
    floor = recipe.min_lr_ratio
    return recipe.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _encode(bundle: ModelBundle, seed: int, recipe: defaults.PretrainRecipe) -> tuple[_Data, str, int]:
    """Draw the corpus, split it, and tokenise it once per objective with the fine-tuning code."""
    exclude = downstream_image_hashes(defaults.SYNTH_SEED, defaults.SYNTH_SPLIT_SIZES)
    items = make_corpus(seed, recipe.train_items + recipe.heldout_items, recipe.caption_share, exclude)
    parts: dict[str, dict[str, list[EncodedProblem]]] = {"train": {}, "heldout": {}}
    for split, block in (("train", items[: recipe.train_items]), ("heldout", items[recipe.train_items:])):
        for objective in OBJECTIVES:
            examples = [it.example(f"{split}-{i}", bundle.image_size)
                        for i, it in enumerate(block) if it.objective == objective]
            parts[split][objective] = encode_examples(examples, bundle, recipe.max_prompt_tokens)
    transform = ImageTransform(bundle.image_size, bundle.image_mean, bundle.image_std, augment=False)
    data = _Data(TokenSpec.from_bundle(bundle), transform, parts["train"], parts["heldout"])
    return data, corpus_hash(items), len(exclude)


def _epoch_batches(data: _Data, batch_size: int, gen: torch.Generator) -> list[tuple[str, list[EncodedProblem]]]:
    """Single-objective batches (so each objective's loss is measured), in one seeded order."""
    batches = []
    for objective in OBJECTIVES:
        problems = data.train[objective]
        order = torch.randperm(len(problems), generator=gen).tolist()
        batches += [(objective, [problems[i] for i in ids]) for ids in chunks(order, batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def _heldout_loss(bundle: ModelBundle, data: _Data, batch_size: int) -> dict[str, float]:
    """Token-mean NLL per objective on items never trained on (eval mode, no dropout)."""
    model, out = bundle.model, {}
    model.eval()
    with torch.no_grad():
        for objective, problems in data.heldout.items():
            nll, tokens = 0.0, 0
            for chunk in chunks(problems, batch_size):
                batch = collate_train(chunk, data.transform(stack_images(chunk), train=False), data.spec)
                nll += float(token_nll(forward_logits(model, batch), batch.labels).sum())
                tokens += int((batch.labels >= 0).sum())
            out[objective] = nll / max(1, tokens)
    return out


def pretrain(preset: str, seed: int, recipe: defaults.PretrainRecipe, log: Log = print) -> PretrainResult:
    """Train every tensor of ``preset`` from its seeded random init on the pretraining corpus."""
    check_choice("preset", preset, TINY_PRESETS)
    start = time.perf_counter()
    torch.set_num_threads(recipe.num_threads)
    bundle = build_model(preset, init="random", seed=seed)
    model = bundle.model.requires_grad_(True)
    data, digest, excluded = _encode(bundle, seed, recipe)
    optimizer = make_optimizer(model, recipe.lr, recipe.weight_decay)
    precision = Precision("cpu", None)
    per_epoch = sum(math.ceil(len(p) / recipe.batch_size) for p in data.train.values())
    total, step = per_epoch * recipe.epochs, 0
    history: dict[str, list[float]] = {o: [] for o in OBJECTIVES}
    for epoch in range(recipe.epochs):
        torch.manual_seed(seed * 100_003 + epoch)  # dropout
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        model.train()
        sums = {o: [0.0, 0] for o in OBJECTIVES}
        for objective, chunk in _epoch_batches(data, recipe.batch_size, gen):
            set_lr(optimizer, lr_at_step(recipe, step, total))
            pixels = data.transform(stack_images(chunk), train=False)
            result = train_step(model, [collate_train(chunk, pixels, data.spec)], optimizer, precision)
            if not result.finite:
                raise RuntimeError(f"pretraining {preset}: non-finite loss at step {step}; lower --lr")
            sums[objective][0] += result.loss
            sums[objective][1] += 1
            step += 1
        for o in OBJECTIVES:
            history[o].append(sums[o][0] / max(1, sums[o][1]))
        log(f"epoch {epoch + 1}/{recipe.epochs} step {step}: "
            + " ".join(f"{o}={history[o][-1]:.4f}" for o in OBJECTIVES)
            + f" ({time.perf_counter() - start:.0f} s)")
    heldout = _heldout_loss(bundle, data, recipe.batch_size)
    model.requires_grad_(False).eval()
    return PretrainResult(bundle=bundle, seed=seed, recipe=recipe, corpus_sha256=digest,
                          excluded_images=excluded, steps=step, train_loss=history,
                          heldout_loss=heldout, wall_s=time.perf_counter() - start)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--preset", required=True, choices=TINY_PRESETS)
    p.add_argument("--seed", type=int, default=defaults.PRETRAIN_SEED)
    p.add_argument("--out", type=Path, default=None,
                   help="directory for <preset>.safetensors and <preset>.json (default: the shipped assets)")
    for f in dataclasses.fields(defaults.PretrainRecipe):
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(getattr(defaults.PRETRAIN, f.name)),
                       default=None, help=f"default {getattr(defaults.PRETRAIN, f.name)}")
    return p


def rebuild_command(preset: str, seed: int, recipe: defaults.PretrainRecipe) -> str:
    """The exact command that rebuilds a run: every recipe value spelled out."""
    flags = " ".join(f"--{f.name.replace('_', '-')} {getattr(recipe, f.name)}"
                     for f in dataclasses.fields(recipe))
    return f"python -m trainables.pretrain --preset {preset} --seed {seed} {flags}"


def main(argv: Sequence[str] | None = None) -> int:
    from trainables.pretrain_report import score_zero_shot, write_shipped  # the scoring side

    args = vars(_parser().parse_args(argv))
    preset, seed, out = args.pop("preset"), args.pop("seed"), args.pop("out")
    recipe = dataclasses.replace(defaults.PRETRAIN, **{k: v for k, v in args.items() if v is not None})
    for name in ("train_items", "heldout_items", "epochs", "batch_size", "num_threads"):
        if getattr(recipe, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(recipe, name)}", file=sys.stderr)
            return 2
    result = pretrain(preset, seed, recipe, log=lambda line: print(line, file=sys.stderr, flush=True))
    zero = score_zero_shot(result.bundle, seed)
    weights, manifest = write_shipped(result, zero, rebuild_command(preset, seed, recipe), out)
    print(f"wrote {weights} and {manifest}; zero-shot test accuracy: "
          + ", ".join(f"{b} {v['test']:.3f} (chance {v['chance_test']:.3f})" for b, v in zero.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
