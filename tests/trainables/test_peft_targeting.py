"""PEFT targeting: exact LoRA modules per Table-1 row, requires_grad pattern, one real step."""
from __future__ import annotations

import pytest
import torch

from trainables.families import family_spec
from trainables.methods import PeftSetup
from trainables.peft_targeting import apply_method, is_lora_param, lora_target_names, target_regex
from trainables.presets import build_model

RANKS = (1, 2, 4, 8)
LORA_ROWS = [("llm_lora", "ffn"), ("llm_lora", "attn"), ("llm_lora", "all"),
             ("qformer_lora", "ffn"), ("qformer_lora", "self_attn"),
             ("qformer_lora", "cross_attn"), ("qformer_lora", "all"), ("both_lora", "all")]

# The tiny presets: Q-Former 4 layers (cross-attention on 0 and 2), T5 2+2 blocks, LLaMA 2 layers.
QF = "qformer.encoder.layer.{}."
QFORMER_EXPECTED = {
    "self_attn": [QF.format(i) + f"attention.attention.{p}" for i in range(4) for p in ("query", "value")],
    "cross_attn": [QF.format(i) + f"crossattention.{p}" for i in (0, 2) for p in
                   ("attention.query", "attention.key", "attention.value", "output.dense")],
    "ffn": [QF.format(i) + f"{p}.dense" for i in range(4) for p in
            ("intermediate", "output", "intermediate_query", "output_query")],
}
T5_ATTN = ([f"language_model.encoder.block.{b}.layer.0.SelfAttention.{p}" for b in (0, 1) for p in "qv"]
           + [f"language_model.decoder.block.{b}.layer.0.SelfAttention.{p}" for b in (0, 1) for p in "qv"]
           + [f"language_model.decoder.block.{b}.layer.1.EncDecAttention.{p}" for b in (0, 1) for p in "qv"])
T5_FFN = ([f"language_model.encoder.block.{b}.layer.1.DenseReluDense.{p}" for b in (0, 1)
           for p in ("wi_0", "wi_1", "wo")]
          + [f"language_model.decoder.block.{b}.layer.2.DenseReluDense.{p}" for b in (0, 1)
             for p in ("wi_0", "wi_1", "wo")])
LLAMA_ATTN = [f"language_model.model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")]
LLAMA_FFN = [f"language_model.model.layers.{i}.mlp.{p}" for i in (0, 1)
             for p in ("gate_proj", "up_proj", "down_proj")]
LLM_EXPECTED = {"t5": {"attn": T5_ATTN, "ffn": T5_FFN}, "llama": {"attn": LLAMA_ATTN, "ffn": LLAMA_FFN}}


def expected_targets(method: str, sublayer: str, family: str) -> set[str]:
    names: list[str] = []
    if method in ("qformer_lora", "both_lora"):
        for key in (QFORMER_EXPECTED if sublayer == "all" else [sublayer]):
            names += QFORMER_EXPECTED[key]
    if method in ("llm_lora", "both_lora"):
        for key in (("attn", "ffn") if sublayer == "all" else [sublayer]):
            names += LLM_EXPECTED[family][key]
    return set(names)


def expected_full_trainable(name: str, method: str) -> bool:
    """The spec's rule for non-LoRA tensors, written independently of the implementation."""
    if name == "query_tokens" or name.startswith(("language_projection.", "vision_model.post_layernorm.")):
        return True
    return name.startswith("qformer.") and method in ("baseline", "llm_lora")


def _strip(name: str) -> str:
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def _check_requires_grad(model, method: str, targets: set[str]) -> None:
    for name, param in model.named_parameters():
        if is_lora_param(name):
            module = _strip(name).split(".lora_")[0]
            assert module in targets and param.requires_grad, name
            continue
        plain = _strip(name)
        assert param.requires_grad == expected_full_trainable(plain, method), plain
        if plain.startswith("vision_model.") and "post_layernorm" not in plain:
            assert not param.requires_grad, plain


# InstructBLIP reads only the query positions of the Q-Former's last layer, so the text-branch
# FFN of that layer (and LoRA on it) gets no gradient: trainable per the spec, but dead weight.
# (True of the real model as well: layer 11's intermediate/output never see a gradient.)
DEAD_PREFIXES = ("qformer.encoder.layer.3.intermediate.", "qformer.encoder.layer.3.output.")


def _is_dead(name: str) -> bool:
    return _strip(name).startswith(DEAD_PREFIXES)


def _step_changes_exactly_trainables(model, batch) -> None:
    """Two AdamW steps (B starts at zero, so A only gets a gradient from step 2 on)."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2,
                                  weight_decay=0.0)
    for _ in range(2):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and not _is_dead(n)}
    dead = [p for n, p in model.named_parameters() if _is_dead(n) and p.requires_grad]
    assert all(p.grad is None or not p.grad.any() for p in dead)
    assert changed == trainable, (sorted(trainable - changed)[:5], sorted(changed - trainable)[:5])


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize(("method", "sublayer"), LORA_ROWS)
@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama"])
def test_lora_rows(preset, method, sublayer, rank, tiny_batch):
    bundle = build_model(preset)
    family, peft = family_spec(bundle.family), PeftSetup(method, sublayer, rank)
    targets = expected_targets(method, sublayer, bundle.family)
    assert set(lora_target_names(bundle.model, peft, family)) == targets
    model = apply_method(bundle.model, peft, family)
    lora_modules = {_strip(n).split(".lora_")[0] for n, _ in model.named_parameters() if is_lora_param(n)}
    assert lora_modules == targets
    assert set(lora_target_names(model, peft, family)) == targets  # works wrapped too
    for name, param in model.named_parameters():
        if ".lora_B." in name:
            assert param.shape[1] == rank and not param.any(), name  # B zero-init: no change at start
        if ".lora_A." in name:
            assert param.shape[0] == rank
    assert model.peft_config["default"].lora_alpha == 8 and model.peft_config["default"].lora_dropout == 0.0
    _check_requires_grad(model, method, targets)
    _step_changes_exactly_trainables(model, tiny_batch(bundle))
    assert not any(getattr(m, "merged", False) for m in model.modules())  # adapters stay unmerged


@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama"])
def test_baseline_trains_qformer_and_always_trainables_only(preset, tiny_batch):
    bundle = build_model(preset)
    peft, family = PeftSetup("baseline", "none", 0), family_spec(bundle.family)
    model = apply_method(bundle.model, peft, family)
    assert model is bundle.model
    assert lora_target_names(model, peft, family) == []
    _check_requires_grad(model, "baseline", set())
    _step_changes_exactly_trainables(model, tiny_batch(bundle))


def test_wrapped_model_starts_identical_to_the_base(tiny_batch):
    bundle = build_model("tiny-t5")
    bundle.model.eval()
    batch = tiny_batch(bundle)
    with torch.no_grad():
        expected = bundle.model(**batch).logits
        wrapped = apply_method(bundle.model, PeftSetup("both_lora", "all", 4), family_spec("t5"))
        assert torch.allclose(wrapped(**batch).logits, expected)


def test_save_pretrained_holds_adapters_only(tmp_path):
    bundle = build_model("tiny-llama")
    model = apply_method(bundle.model, PeftSetup("qformer_lora", "all", 2), family_spec("llama"))
    model.save_pretrained(str(tmp_path))
    from safetensors.torch import load_file
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert saved and all(is_lora_param(k) for k in saved)


@pytest.mark.parametrize(("args", "message"), [
    (("lora", "all", 2), r"unknown method 'lora'; allowed: baseline, llm_lora, qformer_lora, both_lora"),
    (("qformer_lora", "attn", 2), r"sublayer 'attn' is not valid for method 'qformer_lora'; "
                                  r"allowed: ffn, self_attn, cross_attn, all"),
    (("llm_lora", "cross_attn", 2), r"sublayer 'cross_attn' .* allowed: ffn, attn, all"),
    (("both_lora", "all", 0), r"rank must be a positive integer, got 0"),
    (("both_lora", "all", -1), r"rank must be a positive integer, got -1"),
    (("both_lora", "all", 2.0), r"rank must be a positive integer, got 2.0"),
    (("both_lora", "all", "2"), r"rank must be a positive integer, got '2'"),
    (("baseline", "none", 4), r"method 'baseline' has no LoRA, so its rank must be 0, got 4"),
    (("baseline", "none", 0, "dora"), r"method 'baseline' has no LoRA, so its adapter must be 'lora'"),
    (("both_lora", "all", 2, "vera"), r"unknown adapter 'vera'; allowed: lora, dora, rslora, pissa"),
    (("both_lora", "all", 2, "lora", "r"), r"unknown alpha rule 'r'; allowed: fixed8, 2r"),
])
def test_bad_setup_is_one_clear_error(args, message):
    with pytest.raises(ValueError, match=message):
        PeftSetup(*args)


def test_unknown_family_is_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown LLM family 'gpt': trainables.families has no "
                                         r"spec for it \(known: t5, llama\)"):
        family_spec("gpt")


def test_regexes_are_anchored():
    regex = target_regex(PeftSetup("both_lora", "all", 1), family_spec("t5"))
    import re
    assert not re.fullmatch(regex, "qformer.encoder.layer.0.attention.output.dense")
    assert not re.fullmatch(regex, "qformer.encoder.layer.0.attention.attention.key")
    assert not re.fullmatch(regex, "vision_model.encoder.layers.0.mlp.fc1")
    assert not re.fullmatch(regex, "language_model.encoder.block.0.layer.0.SelfAttention.o")
    assert re.fullmatch(regex, "qformer.encoder.layer.10.crossattention.output.dense")
