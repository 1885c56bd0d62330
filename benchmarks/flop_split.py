"""Per-problem FLOP split between the ViT, the Q-Former and the LLM, counted by torch.

    python -m benchmarks.flop_split [--presets flan-t5-xl xlsplit-t5 small-t5] [--benchmark synth-iconqa]

Why: a CPU benchmark of the ViT feature cache only predicts the speed-up on Flan-T5-XL if its
model spends the same share of its work in the ViT; this counts that share instead of guessing.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention) on
the project's own code paths, both_lora r4, per problem:
- ``train``: one training step (forward + backward) = ViT trunk forward + the model's training
  forward/backward fed the trunk's features; the Q-Former part (post_layernorm, Q-Former,
  projection) is its forward + backward alone; the LLM is the rest.
- ``score``: the batched, prefix-shared scorer (``scoring.candidate_nll``) fed trunk features,
  plus the ViT trunk; the Q-Former part is its forward alone.
A real preset (flan-t5-xl) runs on fake tensors (shapes only: no weights, no memory) on synthetic
problems with the planner's IconQA token counts (orchestrator.driver.plan: prompt, Q-Former text and
answer tokens; CANDIDATES options per problem); a toy preset runs for real on the benchmark's
first problems. Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode
from transformers import InstructBlipForConditionalGeneration

from orchestrator.driver import plan
from trainables.batching import EncodedProblem, TokenSpec, TrainBatch, collate_train, encode_examples, stack_images
from trainables.data.examples import load_examples
from trainables.data.images import ImageTransform
from trainables.data.prepare import ensure_prepared
from trainables.defaults import recipe_for
from trainables.families import family_spec
from trainables.methods import PeftSetup
from trainables.peft_targeting import apply_method
from trainables.presets import ModelBundle, build_model, model_config
from trainables.scoring import candidate_nll
from trainables.step import Precision, forward_logits, token_nll, unwrap
from trainables.vision_features import accept_features, trunk, vision_model_of
from trainables.vocab import REAL_PRESETS

PEFT = PeftSetup("both_lora", "all", 4)
CANDIDATES = 3
"""Options per IconQA problem (choose_txt has 2-5; the shipped real sample averages 3.2)."""
FP32 = Precision("cpu", None)


@dataclass(frozen=True)
class Split:
    """GFLOP per problem of each part."""

    vit: float
    qformer: float
    llm: float

    def shares(self) -> dict[str, float]:
        total = self.vit + self.qformer + self.llm
        return {"vit": self.vit / total, "qformer": self.qformer / total, "llm": self.llm / total}


def _count(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def measure(model: torch.nn.Module, spec: TokenSpec, problems: Sequence[EncodedProblem],
            pixels: torch.Tensor, batch: TrainBatch) -> dict[str, Split]:
    """The train and score splits of ``model`` (peft-wrapped, vision accepting features);
    ``batch`` is ``problems`` collated (outside any fake-tensor mode: collate checks values)."""
    n, m = len(problems), unwrap(model)
    with torch.no_grad():
        vit = _count(lambda: trunk(vision_model_of(model), pixels))
        features = trunk(vision_model_of(model), pixels)
    q_ids, q_mask = batch.qformer_input_ids, batch.qformer_attention_mask

    def qformer_step(backward: bool) -> None:
        out = m.get_image_features(features, qformer_input_ids=q_ids, qformer_attention_mask=q_mask,
                                   return_dict=True).pooler_output
        if backward:
            out.backward(torch.ones_like(out))

    def train_step() -> None:
        feed = dataclasses.replace(batch, pixel_values=features)
        token_nll(forward_logits(model, feed), feed.labels).sum().backward()

    qf_train, train = _count(lambda: qformer_step(True)), _count(train_step)
    with torch.no_grad():
        qf_score = _count(lambda: qformer_step(False))
    score = _count(lambda: candidate_nll(model, problems, features, spec, FP32))
    g = 1e9 * n
    return {"train": Split(vit / g, qf_train / g, (train - qf_train) / g),
            "score": Split(vit / g, qf_score / g, (score - qf_score) / g)}


def _synthetic_problems(bundle: ModelBundle, n: int) -> list[EncodedProblem]:
    """Token ids of the planner's IconQA shapes (plan.PROMPT_TOKENS etc.)."""
    cfg = bundle.model.config
    prompt = [5] * plan.PROMPT_TOKENS["iconqa"]
    prefix = family_spec(bundle.family).prefix([cfg.image_token_id] * cfg.num_query_tokens, prompt, 1, 1)
    cands = tuple((7,) * (plan.ANSWER_TOKENS - 1) + (1,) for _ in range(CANDIDATES))
    return [EncodedProblem(f"p{i}", torch.zeros(3, 1, 1, dtype=torch.uint8), (101,) * plan.QF_TEXT_TOKENS,
                           tuple(prefix), cands, 0) for i in range(n)]


def real_split(preset: str, n: int = 2) -> dict[str, Split]:
    """A real preset's split on fake tensors: built on the meta device, materialised as fakes."""
    with torch.device("meta"):
        base = InstructBlipForConditionalGeneration(model_config(preset))
    bundle = build_model(preset, meta=True)
    model = apply_method(base, PEFT, family_spec(bundle.family))
    accept_features(model)
    spec = TokenSpec(family=family_spec(bundle.family), pad_id=0, qformer_pad_id=0,
                     image_token_id=base.config.image_token_id, num_query_tokens=base.config.num_query_tokens)
    size = base.config.vision_config.image_size
    problems, pixels = _synthetic_problems(bundle, n), torch.zeros(n, 3, size, size)
    batch = collate_train(problems, pixels, spec)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to_empty(device="cpu")
        return measure(model, spec, problems, pixels, batch)


def toy_split(bundle: ModelBundle, model: torch.nn.Module, problems: Sequence[EncodedProblem],
              pixels: torch.Tensor) -> dict[str, Split]:
    """A toy preset's split on real problems (the model is restored: no gradient is left)."""
    accept_features(model)
    spec = TokenSpec.from_bundle(bundle)
    result = measure(model, spec, problems, pixels, collate_train(problems, pixels, spec))
    model.zero_grad(set_to_none=True)
    return result


def toy_preset_split(preset: str, benchmark: str, n: int = 8,
                     cache_dir: str = ".cache/prepared") -> dict[str, Split]:
    """A toy preset's split on the first ``n`` val problems of ``benchmark``."""
    bundle = build_model(preset, seed=0)
    model = apply_method(bundle.model, PEFT, family_spec(bundle.family))
    examples = load_examples(ensure_prepared(benchmark, cache_dir=cache_dir), "val", bundle.image_size, n)
    problems = encode_examples(examples, bundle, recipe_for(preset).max_prompt_tokens)
    transform = ImageTransform(bundle.image_size, bundle.image_mean, bundle.image_std, augment=False)
    return toy_split(bundle, model, problems, transform(stack_images(problems), train=False))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flop_split", description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["flan-t5-xl", "xlsplit-t5", "small-t5"])
    p.add_argument("--benchmark", default="synth-iconqa")
    args = p.parse_args(argv)
    out = {}
    for preset in args.presets:
        split = real_split(preset) if preset in REAL_PRESETS else toy_preset_split(preset, args.benchmark)
        out[preset] = {phase: {k: round(v, 4) for k, v in s.shares().items()} | {"gflop": round(
            s.vit + s.qformer + s.llm, 3)} for phase, s in split.items()}
        print(preset, json.dumps(out[preset]), flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
