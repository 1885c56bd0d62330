"""train_step, the optimizer and its schedule, precision."""
import copy

import pytest
import torch

from trainables.batching import TokenSpec, collate_train, encode_examples
from trainables.data.examples import Example
from trainables.families import family_spec
from trainables.methods import PeftSetup
from trainables.peft_targeting import apply_method
from trainables.presets import build_model
from trainables.step import Precision, lr_at_epoch, make_optimizer, resolve_precision, train_step

FP32 = Precision("cpu", None)


def _batch(bundle, rows, seed=0):
    gen = torch.Generator().manual_seed(seed)
    examples = [Example(pid=str(i), image=torch.zeros(3, 32, 32, dtype=torch.uint8),
                        prompt=f"Question: item {i} {'long ' * i}? Options: (a) red (b) blue. Answer:",
                        qformer_text=f"item {i}?", candidates=("(a) red", "(b) blue green"),
                        answer_index=i % 2) for i in rows]
    problems = encode_examples(examples, bundle, 96)
    return collate_train(problems, torch.randn(len(rows), 3, 32, 32, generator=gen), TokenSpec.from_bundle(bundle))


@pytest.fixture(params=["tiny-t5", "tiny-llama"])
def setup(request):
    bundle = build_model(request.param, seed=0)
    model = apply_method(bundle.model, PeftSetup("both_lora", "all", 2), family_spec(bundle.family))
    model.eval()  # no dropout: updates must be comparable exactly
    return bundle, model


def test_lr_decays_linearly_per_epoch_without_warmup():
    assert [lr_at_epoch(5e-4, e, 15) for e in (0, 1, 14)] == pytest.approx([5e-4, 5e-4 * 14 / 15, 5e-4 / 15])


def test_weight_decay_only_on_matrices_of_trainable_tensors(setup):
    _, model = setup
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.05)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim < 2 for p in no_decay["params"])
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable
    assert opt.defaults["betas"] == (0.9, 0.999)


def test_accumulation_equals_one_big_batch(setup):
    bundle, model = setup
    twin = copy.deepcopy(model)
    big = _batch(bundle, range(4))
    halves = [_batch(bundle, range(2)), _batch(bundle, range(2, 4))]
    halves[0].pixel_values, halves[1].pixel_values = big.pixel_values[:2], big.pixel_values[2:]
    r1 = train_step(model, [big], make_optimizer(model, 1e-3, 0.05), FP32)
    r2 = train_step(twin, halves, make_optimizer(twin, 1e-3, 0.05), FP32)
    assert r1.loss == pytest.approx(r2.loss, rel=1e-5) and r1.samples == r2.samples == 4
    for (n, a), b in zip(model.named_parameters(), twin.parameters()):
        if a.requires_grad:
            assert torch.allclose(a, b, atol=1e-6), n


def test_training_loss_falls_and_is_seeded(setup):
    bundle, model = setup
    twin = copy.deepcopy(model)
    batch = _batch(bundle, range(8))
    losses = [[train_step(m, [batch], opt, FP32).loss for _ in range(15)]
              for m, opt in ((model, make_optimizer(model, 5e-3, 0.05)), (twin, make_optimizer(twin, 5e-3, 0.05)))]
    assert losses[0][-1] < losses[0][0] - 0.5  # nats per token
    assert losses[0] == losses[1]


def test_non_finite_loss_skips_the_update(setup):
    bundle, model = setup
    batch = _batch(bundle, range(2))
    batch.pixel_values[:] = float("nan")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    result = train_step(model, [batch], make_optimizer(model, 1e-3, 0.05), FP32)
    assert not result.finite
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)


def test_precision_resolution():
    assert resolve_precision("auto", "cpu").dtype is None
    assert resolve_precision("fp32", "cpu").name == "fp32"
    assert resolve_precision("bf16", "cpu").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_is_bf16_autocast_on_cuda(setup):
    bundle, model = setup
    precision = resolve_precision("auto", "cuda")
    assert precision.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    model.to("cuda")
    result = train_step(model, [_batch(bundle, range(2)).to("cuda")], make_optimizer(model, 1e-3, 0.05), precision)
    assert result.finite
