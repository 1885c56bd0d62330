"""Cached frozen-ViT features: the model computes exactly what it computes from pixels, trials
report the same numbers with the cache on and off, and stale or foreign entries are never used."""
import time

import pytest
import torch

from tests.trainables.test_scoring import _problems
from trainables import vision_features
from trainables.accounting import count_parameters
from trainables.batching import TokenSpec, collate_train, stack_images
from trainables.config import TrialConfig
from trainables.data.images import ImageTransform
from trainables.families import family_spec
from trainables.feature_store import CorruptEntryWarning
from trainables.loop import run_trial
from trainables.methods import PeftSetup
from trainables.peft_targeting import apply_method
from trainables.presets import build_model
from trainables.scoring import score_candidates
from trainables.step import Precision, forward_logits, token_nll
from trainables.vision_features import METRIC_KEYS, CachedInputs, accept_features, trunk, vision_model_of

FP32 = Precision("cpu", None)
# est_peak_memory_gib: a released ViT trunk holds no memory, so the estimate differs by design
BOOKKEEPING = ("samples_per_s", "epoch_time_s", "checkpoint_mb", "peak_memory_gib", "est_peak_memory_gib", *METRIC_KEYS)


def _lora_model(preset, seed=1):
    bundle = build_model(preset, seed=seed, init="random")  # seeds must give different ViTs
    model = apply_method(bundle.model, PeftSetup("both_lora", "all", 2), family_spec(bundle.family))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "post_layernorm" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) * 0.05)
    return bundle, model


def _inputs(bundle, model, root, train_from_cache=False):
    transform = ImageTransform(bundle.image_size, bundle.image_mean, bundle.image_std, augment=False)
    return CachedInputs(model, transform, torch.device("cpu"), FP32, str(root), max_bytes=2**30,
                        train_from_cache=train_from_cache, batch_size=4)


@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama"])
def test_trunk_features_give_exactly_what_pixels_give(preset):
    """Same logits, same candidate scores and the same gradient on the trainable post_layernorm."""
    bundle, model = _lora_model(preset)
    accept_features(model)
    problems = _problems(bundle)
    pixels = torch.randn(len(problems), 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        features = trunk(vision_model_of(model), pixels)
    assert features.dim() == 3 and features.shape[0] == len(problems)
    spec = TokenSpec.from_bundle(bundle)
    scores = [score_candidates(model, problems, x, spec, FP32).scores for x in (pixels, features)]
    assert scores[0] == scores[1]
    grads = []
    for x in (pixels, features):
        model.zero_grad()
        torch.manual_seed(0)  # the same dropout masks in the Q-Former and the LLM
        batch = collate_train(problems, x, spec)
        token_nll(forward_logits(model, batch), batch.labels).sum().backward()
        grads.append(vision_model_of(model).post_layernorm.weight.grad.clone())
    assert grads[0].abs().sum() > 0 and torch.equal(grads[0], grads[1])


def test_a_different_vision_checkpoint_never_uses_the_cache(tmp_path):
    problems = _problems(build_model("tiny-t5"))
    (one, model_one), (two, model_two) = _lora_model("tiny-t5", seed=1), _lora_model("tiny-t5", seed=5)
    first, second = _inputs(one, model_one, tmp_path), _inputs(two, model_two, tmp_path)
    first.prepare(problems)
    second.prepare(problems)
    assert len(first.computed) == len(second.computed) == len(problems)
    assert first.store.dir != second.store.dir
    pixels = second.transform(stack_images(problems), train=False)
    with torch.no_grad():
        assert torch.equal(second.eval_inputs(problems), trunk(vision_model_of(model_two), pixels))
    again = _inputs(*_lora_model("tiny-t5", seed=1), tmp_path)  # same weights: every entry is a hit
    again.prepare(problems)
    assert again.computed == [] and torch.equal(again.eval_inputs(problems), first.eval_inputs(problems))


def test_a_corrupted_entry_is_recomputed_at_prepare_with_a_warning(tmp_path):
    bundle, model = _lora_model("tiny-t5")
    problems = _problems(bundle)
    first = _inputs(bundle, model, tmp_path)
    first.prepare(problems)
    want = first.eval_inputs(problems)  # a copy: the bytes flipped below are mapped by `first`
    key = first.key(problems[2].image)
    path = first.store.path(key)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10
    path.write_bytes(bytes(data))
    second = _inputs(*_lora_model("tiny-t5"), tmp_path)
    with pytest.warns(CorruptEntryWarning):
        second.prepare(problems)
    assert second.computed == [key]
    # recomputed alone rather than in a batch of 4: equal up to float rounding of the matmuls
    assert torch.allclose(second.eval_inputs(problems), want, atol=1e-6)


def test_the_trunk_leaves_only_when_training_reads_the_cache(tmp_path):
    bundle, model = _lora_model("tiny-t5")
    problems = _problems(bundle)
    counts = count_parameters(model, PeftSetup("both_lora", "all", 2), family_spec("t5"))
    kept = _inputs(bundle, model, tmp_path)
    kept.prepare(problems)
    assert not vision_model_of(model).encoder.layers[0].mlp.fc1.weight.is_meta
    gen = torch.Generator().manual_seed(0)
    assert kept.train_inputs(problems, gen).dim() == 4  # pixels: the model runs its ViT
    released = _inputs(bundle, model, tmp_path, train_from_cache=True)
    released.prepare(problems)
    vision = vision_model_of(model)
    assert vision.encoder.layers[0].mlp.fc1.weight.is_meta and not vision.post_layernorm.weight.is_meta
    assert released.train_inputs(problems, gen).dim() == 3
    assert count_parameters(model, PeftSetup("both_lora", "all", 2), family_spec("t5")) == counts
    with pytest.raises(RuntimeError, match="released"):
        model(pixel_values=kept.eval_inputs(problems[:1]).new_zeros(1, 3, 32, 32),
              qformer_input_ids=torch.ones(1, 3, dtype=torch.long))


PER_IMAGE_S = 0.05


def _slow_trunk(vision, pixels):
    """A ViT whose forward costs a known PER_IMAGE_S per image (and is far slower than the cache)."""
    time.sleep(PER_IMAGE_S * len(pixels))
    return pixels.mean(dim=(1, 2, 3))[:, None, None].expand(len(pixels), 5, 8).contiguous()


def test_seconds_saved_is_the_vit_time_the_hits_avoided_less_the_cache_cost(tmp_path, monkeypatch):
    """Known answer: 6 images served 3 times. The first trial computes them on its first serve
    (no prepare: the serve prepares, timed once), so 18 uses cost 6 computations: it saved
    12 x PER_IMAGE_S. A second trial finds them all cached: 18 x PER_IMAGE_S."""
    monkeypatch.setattr(vision_features, "trunk", _slow_trunk)
    bundle, model = _lora_model("tiny-t5")
    problems = _problems(bundle)
    for trial, avoided in ((_inputs(bundle, model, tmp_path), 12), (_inputs(bundle, model, tmp_path), 18)):
        for _ in range(3):
            trial.eval_inputs(problems)
        metrics = trial.metrics()
        assert metrics["vit_cache_hits"] == 18 and metrics["vit_cache_misses"] == 18 - avoided
        # below: the cache's own cost (hashing, files: milliseconds here); above: sleep overshoot
        assert avoided * PER_IMAGE_S - 0.15 < metrics["vit_cache_seconds_saved"] < avoided * PER_IMAGE_S + 0.1


def _trial(tmp_path, **over):
    base = {"method": "qformer_lora", "sublayer": "all", "rank": 2, "llm": "tiny-t5", "benchmark": "synth-iconqa",
            "cache_dir": str(tmp_path / "prepared"), "max_train_examples": 32, "max_eval_examples": 16,
            "epochs": 2, "seed": 3}
    reports = []
    run_trial(TrialConfig.from_dict({**base, **over}), report=lambda m, _: reports.append(dict(m)))
    return reports


@pytest.mark.parametrize("augment", [False, True])
def test_a_trial_reports_the_same_numbers_with_the_cache_on_and_off(tmp_path, augment):
    off = _trial(tmp_path, vit_cache=False, augment=augment)
    on = _trial(tmp_path, vit_cache=True, augment=augment)
    for a, b in zip(off, on):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        a = {k: v for k, v in a.items() if k not in BOOKKEEPING + ("train_loss",)}
        assert a == {k: v for k, v in b.items() if k not in BOOKKEEPING + ("train_loss",)}
    assert not any(k in r for r in off for k in METRIC_KEYS)
    images = 32 + 16 + 16  # synth problems have distinct images
    uses = (0 if augment else 2 * 32) + 2 * 16 + 16  # training (no augmentation), val per epoch, test
    assert on[-1]["vit_cache_misses"] == images and on[-1]["vit_cache_hits"] == uses
    again = _trial(tmp_path, vit_cache=True, augment=augment)
    assert again[-1]["vit_cache_misses"] == 0 and again[-1]["vit_cache_hits"] == uses


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cached_features_on_cuda_under_bf16_autocast_score_like_pixels(tmp_path):
    """Computed on the GPU in the trial's precision, stored on the host, served back to the GPU."""
    from trainables.step import resolve_precision
    bundle, model = _lora_model("tiny-t5")
    model.to("cuda")
    precision = resolve_precision("auto", "cuda")
    transform = ImageTransform(bundle.image_size, bundle.image_mean, bundle.image_std, augment=False)
    cached = CachedInputs(model, transform, torch.device("cuda"), precision, str(tmp_path), max_bytes=2**30,
                          train_from_cache=False, batch_size=4)
    problems = _problems(bundle)
    cached.prepare(problems)
    spec = TokenSpec.from_bundle(bundle)
    pixels = transform(stack_images(problems), train=False).cuda()
    features = cached.eval_inputs(problems)
    assert features.is_cuda and features.dim() == 3
    a = score_candidates(model, problems, pixels, spec, precision)
    b = score_candidates(model, problems, features, spec, precision)
    assert a.predictions == b.predictions
    assert torch.allclose(torch.tensor(sum(a.scores, [])), torch.tensor(sum(b.scores, [])), atol=5e-2)
