"""The batched, prefix-shared scorer equals one full forward per candidate, and shares work."""
import pytest
import torch

from trainables.batching import TokenSpec, encode_examples
from trainables.data.examples import Example
from trainables.families import family_spec
from trainables.methods import PeftSetup
from trainables.peft_targeting import apply_method
from trainables.presets import build_model
from trainables.scoring import score_candidates, score_naive
from trainables.step import Precision, unwrap

FP32 = Precision("cpu", None)


def _problems(bundle, n=6):
    """Prompts and candidates of different lengths (2-4 candidates, 1-6 words each)."""
    gen = torch.Generator().manual_seed(0)
    words = ["red", "blue", "green circle", "a big yellow square", "purple", "one two three four"]
    examples = []
    for i in range(n):
        cands = tuple(f"({'abcd'[j]}) {words[(i + j) % len(words)]}" for j in range(2 + i % 3))
        examples.append(Example(
            pid=f"p{i}", image=torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=gen),
            prompt="Context: " + "some hint " * i + "Question: Which one? Options: ... Answer:",
            qformer_text="Which one?" + " really" * (i % 3), candidates=cands, answer_index=i % 2))
    return encode_examples(examples, bundle, 96)


@pytest.fixture(scope="module", params=["tiny-t5", "tiny-llama"])
def lora_bundle(request):
    """A both_lora model whose LoRA B matrices are non-zero, so the peft path changes the scores."""
    bundle = build_model(request.param, seed=1)
    model = apply_method(bundle.model, PeftSetup("both_lora", "all", 2), family_spec(bundle.family))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return bundle, model


def test_batched_scores_equal_naive_full_forward(lora_bundle):
    bundle, model = lora_bundle
    problems = _problems(bundle)
    assert len({len(c) for p in problems for c in p.candidate_ids}) > 2
    assert len({len(p.prefix_ids) for p in problems}) == len(problems)
    pixels = torch.randn(len(problems), 3, 32, 32, generator=torch.Generator().manual_seed(3))
    spec = TokenSpec.from_bundle(bundle)
    fast = score_candidates(model, problems, pixels, spec, FP32)
    slow = score_naive(model, problems, pixels, spec, FP32)
    assert fast.predictions == slow.predictions
    for a, b in zip(fast.scores, slow.scores):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=1e-5)
    # a single problem scored alone gets the same scores as inside the batch (padding is inert)
    alone = score_candidates(model, problems[2:3], pixels[2:3], spec, FP32)
    assert torch.allclose(torch.tensor(alone.scores[0]), torch.tensor(fast.scores[2]), atol=1e-4)


def test_vision_and_prefix_run_once_per_problem(lora_bundle):
    bundle, model = lora_bundle
    problems = _problems(bundle, n=4)
    m = unwrap(model)
    seen = {"vision": [], "llm": []}
    hooks = [m.vision_model.register_forward_hook(
        lambda mod, a, kw, out: seen["vision"].append(kw["pixel_values"].shape[0]), with_kwargs=True)]
    encoder = m.language_model.get_encoder() if bundle.family == "t5" else m.language_model
    hooks.append(encoder.register_forward_hook(
        lambda mod, a, kw, out: seen["llm"].append(kw.get("inputs_embeds")), with_kwargs=True))
    if bundle.family == "t5":  # cross-attention keys are projected per problem, not per candidate
        seen["cross_k"] = []
        key_proj = m.language_model.get_decoder().block[0].layer[1].EncDecAttention.k
        hooks.append(key_proj.register_forward_hook(lambda mod, a, out: seen["cross_k"].append(a[0].shape[0])))
    try:
        score_candidates(model, problems, torch.randn(4, 3, 32, 32), TokenSpec.from_bundle(bundle), FP32)
    finally:
        for h in hooks:
            h.remove()
    assert seen["vision"] == [4]  # one vision + Q-Former pass for the 4 problems
    prefix_passes = [e for e in seen["llm"] if e is not None]
    assert len(prefix_passes) == 1 and prefix_passes[0].shape[0] == 4  # prefix once per problem
    assert seen.get("cross_k", [4]) == [4]


def test_accuracy_and_lowest_nll_wins(lora_bundle):
    bundle, model = lora_bundle
    problems = _problems(bundle, n=3)
    result = score_candidates(model, problems, torch.zeros(3, 3, 32, 32), TokenSpec.from_bundle(bundle), FP32)
    assert result.predictions == [min(range(len(s)), key=s.__getitem__) for s in result.scores]
    hits = sum(p == q.answer_index for p, q in zip(result.predictions, problems))
    assert result.accuracy(problems) == hits / 3
