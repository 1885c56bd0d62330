"""The batched, prefix-shared scorer equals one full forward per candidate, and shares work."""
import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trainables.batching import EncodedProblem, TokenSpec, encode_examples
from trainables.data.examples import Example
from trainables.families import family_spec
from trainables.methods import PeftSetup
from trainables.peft_targeting import apply_method
from trainables.presets import build_model
from trainables.scoring import ScoreResult, _cache_kwarg, _owner, _prefix_embeds, score_candidates, score_naive
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


@pytest.mark.parametrize("length", [1, 2])
def test_candidates_of_one_or_two_tokens_score_as_the_naive_forward(lora_bundle, length):
    """Edge of the prefix-cache path: every candidate a single token (scored from the prefix's
    last logits alone) or two (one token after the prefix)."""
    bundle, model = lora_bundle
    eos = int(bundle.llm_tokenizer.eos_token_id)
    cands = tuple((7 + j,) if length == 1 else (7 + j, eos) for j in range(3))
    problems = [dataclasses.replace(p, candidate_ids=cands) for p in _problems(bundle, n=3)]
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    spec = TokenSpec.from_bundle(bundle)
    fast = score_candidates(model, problems, pixels, spec, FP32)
    slow = score_naive(model, problems, pixels, spec, FP32)
    for a, b in zip(fast.scores, slow.scores):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=1e-5)


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
    else:  # the prefix pass projects only its last position to the vocabulary
        seen["head"] = []
        hooks.append(m.language_model.get_output_embeddings().register_forward_hook(
            lambda mod, a, out: seen["head"].append(a[0].shape[1])))
    try:
        score_candidates(model, problems, torch.randn(4, 3, 32, 32), TokenSpec.from_bundle(bundle), FP32)
    finally:
        for h in hooks:
            h.remove()
    assert seen["vision"] == [4]  # one vision + Q-Former pass for the 4 problems
    prefix_passes = [e for e in seen["llm"] if e is not None]
    assert len(prefix_passes) == 1 and prefix_passes[0].shape[0] == 4  # prefix once per problem
    assert seen.get("cross_k", [4]) == [4]
    assert seen.get("head", [1, 0])[0] == 1


def _fixed_nll(monkeypatch, nll_of) -> list[tuple]:
    """candidate_nll replaced: the NLL of candidate c of a problem is nll_of(pid, c), so the
    ranking rule and the batching around it are checked against numbers the test chose.
    Returns the calls: (model, pids, spec, precision) each."""
    import trainables.scoring as scoring
    calls = []

    def candidate_nll(model, problems, pixel_values, spec, precision):
        assert pixel_values.shape[0] == len(problems)
        calls.append((model, [p.pid for p in problems], spec, precision))
        return torch.tensor([nll_of(p.pid, c) for p in problems for c in range(len(p.candidate_ids))])

    monkeypatch.setattr(scoring, "candidate_nll", candidate_nll)
    return calls


def test_the_lowest_nll_candidate_wins_and_accuracy_counts_hits(lora_bundle, monkeypatch):
    bundle, model = lora_bundle
    problems = _problems(bundle, n=3)  # 2, 3 and 4 candidates; answers 0, 1, 0
    table = {"p0": [2.0, 0.5], "p1": [0.25, 0.75, 0.25], "p2": [4.0, 4.0, 1.5, 2.5]}
    _fixed_nll(monkeypatch, lambda pid, c: table[pid][c])
    result = score_candidates(model, problems, torch.zeros(3, 3, 32, 32), TokenSpec.from_bundle(bundle), FP32)
    assert result.predictions == [1, 0, 2]  # p1: a tie goes to the first candidate
    assert result.scores == [[2.0, 0.5], [0.25, 0.75, 0.25], [4.0, 4.0, 1.5, 2.5]]
    assert [p.answer_index for p in problems] == [0, 1, 0]
    assert result.accuracy(problems) == 0.0  # no pick is the answer
    table["p0"] = [0.125, 0.5]
    assert score_candidates(model, problems, torch.zeros(3, 3, 32, 32), TokenSpec.from_bundle(bundle),
                            FP32).accuracy(problems) == pytest.approx(1 / 3)


@pytest.mark.parametrize("batch_size", [1, 2, 4, 6])
def test_batched_scoring_returns_results_in_the_problems_order(lora_bundle, monkeypatch, batch_size):
    from trainables.scoring import score_in_batches

    bundle, model = lora_bundle
    problems = _problems(bundle, n=6)  # prefixes of six different lengths, shuffled below
    problems = [problems[i] for i in (3, 0, 5, 1, 4, 2)]
    calls = _fixed_nll(monkeypatch, lambda pid, c: 10.0 * int(pid[1:]) + (c + int(pid[1:])) % 2)
    chunks: list[int] = []

    def pixels_for(chunk):
        chunks.append(len(chunk))
        return torch.zeros(len(chunk), 3, 32, 32)

    spec = TokenSpec.from_bundle(bundle)
    result = score_in_batches(model, problems, pixels_for, spec, FP32, batch_size)
    numbers = [int(p.pid[1:]) for p in problems]
    assert [row[0] for row in result.scores] == [10.0 * n + n % 2 for n in numbers]
    assert result.predictions == [n % 2 for n in numbers]  # odd n: candidate 1 is lowest
    assert chunks == [min(batch_size, 6 - i) for i in range(0, 6, batch_size)]
    # chunks group similar prefix lengths: p<i> has the i-th shortest prefix (_problems)
    pids = [f"p{i}" for i in range(6)]
    assert [c[1] for c in calls] == [pids[i: i + batch_size] for i in range(0, 6, batch_size)]
    assert all(c[0] is model and c[2] is spec and c[3] is FP32 for c in calls)


def test_accuracy_is_hits_over_problems():
    problems = [SimpleNamespace(answer_index=a) for a in (1, 0, 2)]
    assert ScoreResult([1, 1, 2], [[]] * 3).accuracy(problems) == pytest.approx(2 / 3)
    assert ScoreResult([1], [[]]).accuracy(problems[:1]) == 1.0
    assert ScoreResult([], []).accuracy([]) == 0.0


def test_scores_do_not_depend_on_the_checkpoint_config_return_dict(lora_bundle):
    """A checkpoint whose config says ``return_dict: false`` makes InstructBLIP's
    get_image_features return a tuple unless the scorer asks for a ModelOutput itself."""
    bundle, model = lora_bundle
    problems = _problems(bundle, n=2)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    spec = TokenSpec.from_bundle(bundle)
    expected = score_candidates(model, problems, pixels, spec, FP32).scores
    config = unwrap(model).config
    config.return_dict = False
    try:
        assert score_candidates(model, problems, pixels, spec, FP32).scores == expected
    finally:
        config.return_dict = True


def _problem(pid, qformer_ids, prefix_ids, candidates=((1,),)):
    return EncodedProblem(pid, torch.zeros(3, 4, 4, dtype=torch.uint8), qformer_ids, prefix_ids, candidates, 0)


def test_prefix_embeds_place_the_image_features_in_the_llm_dtype_on_the_images_device():
    """A stand-in model: the Q-Former inputs go to the device of the pixel values (``meta`` here,
    a GPU in a real run, where CPU ids would fail), and the image-token positions get the
    Q-Former features (fp32) cast to the LLM embeddings' dtype (bf16), in order; every other
    position keeps its token embedding."""
    spec = TokenSpec(family=family_spec("t5"), pad_id=0, qformer_pad_id=0, image_token_id=9, num_query_tokens=2)
    embed = nn.Embedding(10, 2).to(torch.bfloat16)
    with torch.no_grad():
        embed.weight.copy_(torch.arange(20.0).view(10, 2))  # token t embeds as (2t, 2t + 1)
    feats = torch.tensor([[[0.5, 1.5], [2.5, 3.5]], [[4.5, 5.5], [6.5, 7.5]]])
    seen = {}

    class StandIn:
        def get_input_embeddings(self):
            return embed

        def get_image_features(self, pixel_values, **kwargs):
            seen.update(kwargs)
            return SimpleNamespace(pooler_output=feats)

    problems = [_problem("a", (5, 6, 7), (9, 9, 3)), _problem("b", (5, 6), (4, 9, 9))]
    pixels = torch.empty(2, 3, 4, 4, device="meta")
    out = _prefix_embeds(StandIn(), problems, pixels, torch.tensor([[9, 9, 3], [4, 9, 9]]), spec)
    assert seen["qformer_input_ids"].device.type == "meta"
    assert seen["qformer_attention_mask"].device.type == "meta"
    assert out.dtype == torch.bfloat16
    assert out.tolist() == [[[0.5, 1.5], [2.5, 3.5], [6.0, 7.0]], [[8.0, 9.0], [4.5, 5.5], [6.5, 7.5]]]


def test_candidate_owners_are_built_on_the_device_asked_for():
    problems = [_problem("a", (5,), (9,), ((1,), (2,))), _problem("b", (5,), (9,), ((1,), (2,), (3,)))]
    assert _owner(problems, torch.device("cpu")).tolist() == [0, 0, 1, 1, 1]
    on_meta = _owner(problems, torch.device("meta"))  # shape-only tensors, as the FLOP counts use
    assert on_meta.device.type == "meta" and on_meta.shape == (5,)


def test_the_kv_cache_argument_is_named_as_the_llm_forward_names_it():
    """transformers >= 5.2x calls it ``cache``, earlier 5.x ``past_key_values``."""
    class Newer(nn.Module):
        def forward(self, input_ids=None, cache=None):
            pass

    class Older(nn.Module):
        def forward(self, input_ids=None, past_key_values=None):
            pass

    assert _cache_kwarg(Newer()) == "cache"
    assert _cache_kwarg(Older()) == "past_key_values"
