"""PEFT kinds as data: every Adapter entry wraps a model, counts as peft counts, starts unchanged.

The tests iterate over ADAPTERS, so a new entry is covered by them without a new test; what a
new kind needs beyond that is a test of its own defining property (as DoRA's and PiSSA's below).
"""
from __future__ import annotations

import math

import pytest
import torch

from trainables.accounting import count_parameters, measured_trainable
from trainables.families import family_spec
from trainables.methods import ADAPTERS, ALPHA_RULES, METHODS, PeftSetup, table_rows
from trainables.peft_targeting import apply_method, is_lora_param, lora_config, lora_target_names
from trainables.presets import build_model


def test_methods_data_answers_the_table_questions():
    assert table_rows()[0] == ("baseline", "none") and len(table_rows()) == 9
    assert [m for m in METHODS if METHODS[m].trains_full_qformer] == ["baseline", "llm_lora"]
    assert [m for m in METHODS if not METHODS[m].has_lora] == ["baseline"]
    assert METHODS["both_lora"].lora == ("qformer", "llm")
    assert {m: METHODS[m].default_sublayer for m in METHODS} == {
        "baseline": "none", "llm_lora": None, "qformer_lora": None, "both_lora": "all"}


@pytest.mark.parametrize(("rule", "rank", "alpha"), [("fixed8", 1, 8), ("fixed8", 8, 8),
                                                     ("2r", 1, 2), ("2r", 8, 16)])
def test_alpha_rules(rule, rank, alpha):
    peft = PeftSetup("qformer_lora", "all", rank, alpha=rule)
    assert peft.lora_alpha == alpha
    assert lora_config(peft, family_spec("t5")).lora_alpha == alpha
    assert set(ALPHA_RULES) == {"fixed8", "2r"}


@pytest.mark.parametrize("adapter", list(ADAPTERS))
@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama"])
def test_every_adapter_counts_as_peft_and_starts_unchanged(preset, adapter, tiny_batch):
    bundle = build_model(preset)
    family, peft = family_spec(bundle.family), PeftSetup("both_lora", "all", 2, adapter)
    batch = tiny_batch(bundle)
    bundle.model.eval()
    with torch.no_grad():
        before = bundle.model(**batch).logits
    expected = count_parameters(bundle.model, peft, family)
    model = apply_method(bundle.model, peft, family)
    peft_trainable, peft_total = model.get_nb_trainable_parameters()
    assert measured_trainable(model) == peft_trainable == expected.trainable
    assert peft_total == expected.total
    adapter_params = sum(p.numel() for n, p in model.named_parameters() if is_lora_param(n))
    assert adapter_params == expected.lora_params_qformer + expected.lora_params_llm
    config = model.peft_config["default"]
    for key, value in ADAPTERS[adapter].lora_kwargs.items():
        assert getattr(config, key) == value, key
    with torch.no_grad():  # B = 0 (or PiSSA's residual + its principal part): same function
        assert torch.allclose(model(**batch).logits, before, atol=1e-4)


def test_dora_adds_exactly_one_magnitude_vector_per_adapted_linear():
    bundle = build_model("tiny-llama")
    family, peft = family_spec("llama"), PeftSetup("both_lora", "all", 4, "dora")
    targets = lora_target_names(bundle.model, peft, family)
    modules = dict(bundle.model.named_modules())
    plain = count_parameters(bundle.model, PeftSetup("both_lora", "all", 4), family)
    dora = count_parameters(bundle.model, peft, family)
    model = apply_method(bundle.model, peft, family)
    magnitudes = {n.removeprefix("base_model.model.").split(".lora_magnitude_vector")[0]: p
                  for n, p in model.named_parameters() if ".lora_magnitude_vector." in n}
    assert sorted(magnitudes) == targets
    assert all(p.shape == (modules[n].out_features,) and p.requires_grad
               for n, p in magnitudes.items())
    extra = sum(modules[n].out_features for n in targets)
    assert dora.trainable - plain.trainable == extra
    assert (dora.lora_params_qformer + dora.lora_params_llm
            - plain.lora_params_qformer - plain.lora_params_llm) == extra


def test_rslora_scales_by_the_square_root_of_the_rank():
    bundle = build_model("tiny-t5")
    model = apply_method(bundle.model, PeftSetup("qformer_lora", "ffn", 4, "rslora"),
                         family_spec("t5"))
    layer = model.get_submodule("base_model.model.qformer.encoder.layer.0.intermediate.dense")
    assert math.isclose(layer.scaling["default"], 8 / math.sqrt(4))


def test_pissa_moves_the_principal_part_into_the_adapter():
    bundle = build_model("tiny-t5")
    name = "qformer.encoder.layer.0.intermediate.dense"
    weight = bundle.model.get_submodule(name).weight.detach().clone()
    model = apply_method(bundle.model, PeftSetup("qformer_lora", "ffn", 2, "pissa"),
                         family_spec("t5"))
    layer = model.get_submodule("base_model.model." + name)
    assert layer.lora_B["default"].weight.abs().sum() > 0  # not plain LoRA's B = 0
    residual = layer.base_layer.weight.detach()
    assert not torch.allclose(residual, weight)
    delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    assert torch.allclose(residual + layer.scaling["default"] * delta, weight, atol=1e-5)
