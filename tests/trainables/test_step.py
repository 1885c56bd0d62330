"""train_step, the optimizer and its schedule, precision."""
import copy

import pytest
import torch

from trainables.batching import IGNORE, TokenSpec, collate_train, encode_examples
from trainables.data.examples import Example
from trainables.families import family_spec
from trainables.methods import PeftSetup
from trainables.peft_targeting import apply_method
from trainables.presets import build_model
from trainables.step import (
    Precision,
    lr_at_epoch,
    make_optimizer,
    resolve_precision,
    set_activation_checkpointing,
    set_dropout,
    target_nll_sum,
    train_step,
    upcast_trainables,
)

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
    start = [p.detach().clone() for p in model.parameters()]
    big = _batch(bundle, range(4))
    halves = [_batch(bundle, range(2)), _batch(bundle, range(2, 4))]
    halves[0].pixel_values, halves[1].pixel_values = big.pixel_values[:2], big.pixel_values[2:]
    # SGD at lr 1: the update IS the accumulated gradient. (AdamW's first step is lr * sign(g)
    # for tiny g, so float noise in near-zero gradients flipped whole lr-sized updates.)
    def sgd(m):
        return torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
    r1 = train_step(model, [big], sgd(model), FP32)
    r2 = train_step(twin, halves, sgd(twin), FP32)
    assert r1.loss == pytest.approx(r2.loss, rel=1e-5) and r1.samples == r2.samples == 4
    for (n, a), b in zip(model.named_parameters(), twin.parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
    assert any(not torch.equal(a, c) for (n, a), c in zip(model.named_parameters(), start) if a.requires_grad)


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
    # half-precision frozen weights compute in their own dtype, on any device
    assert resolve_precision("auto", "cpu", "bf16").dtype == torch.bfloat16
    assert resolve_precision("auto", "cpu", "fp16").dtype == torch.float16
    assert resolve_precision("auto", "cpu", "fp16").grad_scaler() is not None  # fp16 needs loss scaling
    assert resolve_precision("auto", "cpu", "bf16").grad_scaler() is None


@pytest.mark.parametrize("weights", [torch.bfloat16, torch.float16])
def test_frozen_half_weights_train_fp32_masters(weights):
    bundle = build_model("tiny-llama", seed=0, dtype=weights)
    model = apply_method(bundle.model, PeftSetup("both_lora", "all", 2), family_spec(bundle.family))
    assert upcast_trainables(model) > 0
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 for p in trainable.values())
    assert all(p.dtype == weights for p in model.parameters() if not p.requires_grad)
    precision = resolve_precision("auto", "cpu", "bf16" if weights == torch.bfloat16 else "fp16")
    before = {n: p.detach().clone() for n, p in trainable.items()}
    opt, scaler = make_optimizer(model, 1e-2, 0.0), precision.grad_scaler()
    for _ in range(20):  # fp16: the scaler skips steps while its initial scale overflows
        assert train_step(model, [_batch(bundle, range(4))], opt, precision, scaler).finite
        if any(not torch.equal(before[n], p) for n, p in trainable.items()):
            break
    else:
        raise AssertionError("20 steps never updated the fp32 masters")
    if scaler is not None:
        assert scaler.get_scale() < 65536.0  # overflowing steps were skipped, not applied


def test_activation_checkpointing_gives_the_same_gradients(setup):
    """Recomputation changes memory, not the update: in training mode (checkpointing is off in
    eval), same seed, so the same dropout masks (the recomputation replays the RNG state)."""
    from trainables.step import forward_logits, token_nll
    bundle, model = setup
    batch = _batch(bundle, range(3))
    grads = []
    for on in (False, True):
        set_activation_checkpointing(model, on)
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        token_nll(forward_logits(model, batch), batch.labels).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    set_activation_checkpointing(model, False)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_is_bf16_autocast_on_cuda(setup):
    bundle, model = setup
    precision = resolve_precision("auto", "cuda")
    assert precision.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    model.to("cuda")
    result = train_step(model, [_batch(bundle, range(2)).to("cuda")], make_optimizer(model, 1e-3, 0.05), precision)
    assert result.finite


@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama"])
def test_set_dropout_zero_makes_a_training_forward_deterministic(preset):
    from trainables.step import forward_logits
    bundle = build_model(preset, seed=0)
    model = bundle.model.train()
    batch = _batch(bundle, range(4))

    def twice():
        outs = []
        for seed in (1, 2):  # dropout draws from the global RNG
            torch.manual_seed(seed)
            with torch.no_grad():
                outs.append(forward_logits(model, batch))
        return outs
    first, second = twice()
    assert not torch.equal(first, second)  # the config's 0.1 dropout is live in train mode
    assert set_dropout(model, 0.0) > 0
    first, second = twice()
    assert torch.equal(first, second)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(model, batch), first)  # train == eval now


def test_target_nll_sum_is_the_summed_token_nll_and_projects_only_target_positions(setup):
    from trainables.step import forward_logits, token_nll
    bundle, model = setup
    batch = _batch(bundle, range(4))
    batch.labels[1] = IGNORE  # a row without targets adds nothing
    expected = token_nll(forward_logits(model, batch), batch.labels).sum()
    torch.testing.assert_close(target_nll_sum(model, batch), expected, rtol=1e-5, atol=1e-4)
    keep = batch.labels != IGNORE
    if batch.decoder_input_ids is None:  # decoder-only: one vocabulary row per target token
        vocab = bundle.model.config.text_config.vocab_size
        assert forward_logits(model, batch, logits_to_keep=keep).shape == (int(keep.sum()), vocab)


def test_foreach_adamw_gives_the_per_tensor_loops_updates_bit_for_bit(setup):
    bundle, model = setup
    twin = copy.deepcopy(model)
    batch = _batch(bundle, range(4))
    fast = make_optimizer(model, 5e-3, 0.05)
    assert all(group["foreach"] for group in fast.param_groups)
    slow = make_optimizer(twin, 5e-3, 0.05)
    for group in slow.param_groups:
        group["foreach"] = False
    for _ in range(3):
        train_step(model, [batch], fast, FP32)
        train_step(twin, [batch], slow, FP32)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
