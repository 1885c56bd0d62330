"""TrialConfig: parsed once from Ray's flat dict; unknown keys and contradictions fail early."""
import pytest

from trainables import defaults
from trainables.config import TrialConfig


def test_none_resolves_to_preset_recipe_and_paper_lr_rule():
    tiny = TrialConfig.from_dict({"method": "qformer_lora", "sublayer": "all", "rank": 4, "llm": "tiny-t5"})
    assert tiny.epochs == defaults.TINY.epochs and tiny.lr == defaults.TINY.lr_lora
    real = TrialConfig.from_dict({"method": "llm_lora", "sublayer": "attn", "rank": 2, "llm": "flan-t5-xl"})
    assert (real.epochs, real.lr, real.effective_batch) == (15, 2e-5, 16)
    assert (real.batch_size, real.grad_accum) == (16, 1)
    llama = TrialConfig.from_dict({"method": "both_lora", "rank": 8, "llm": "vicuna-7b"})
    assert (llama.sublayer, llama.lr, llama.batch_size, llama.grad_accum) == ("all", 5e-4, 8, 2)
    base = TrialConfig.from_dict({"method": "baseline", "llm": "vicuna-7b"})
    assert (base.sublayer, base.rank, base.lr) == ("none", 0, 2e-5)
    assert (real.patience, real.min_epochs, real.weight_decay) == (3, 8, 0.05)


def test_round_trip_and_cell_id():
    cfg = TrialConfig.from_dict({"method": "llm_lora", "sublayer": "ffn", "rank": 2, "llm": "tiny-llama",
                                 "benchmark": "synth-iconqa", "lr": 1e-3, "seed": 3})
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.cell_id == "synth-iconqa|tiny-llama|llm_lora/ffn|r2"


def test_unknown_key_names_it_and_the_allowed_keys():
    with pytest.raises(ValueError, match=r"unknown trial config key\(s\) \['learning_rate'\].*allowed: method"):
        TrialConfig.from_dict({"method": "both_lora", "rank": 2, "learning_rate": 1e-3})


@pytest.mark.parametrize("bad, message", [
    ({"method": "baseline", "rank": 2}, "rank must be 0"),
    ({"method": "llm_lora", "sublayer": "cross_attn", "rank": 2}, "not valid for method 'llm_lora'"),
    ({"method": "llm_lora", "rank": 2}, "needs a sublayer"),
    ({"method": "both_lora"}, "needs a rank"),
    ({"method": "both_lora", "rank": 0}, "positive integer"),
    ({"method": "both_lora", "rank": 2.5}, "rank must be an integer"),
    ({"method": "both_lora", "rank": 2, "lr": 0}, "lr must be > 0"),
    ({"method": "both_lora", "rank": 2, "lr": -1e-3}, "lr must be > 0"),
    ({"method": "both_lora", "rank": 2, "epochs": 0}, "epochs must be >= 1"),
    ({"method": "both_lora", "rank": 2, "epochs": 5, "min_epochs": 6}, "min_epochs"),
    ({"method": "both_lora", "rank": 2, "precision": "fp8"}, "unknown precision"),
    ({"method": "both_lora", "rank": 2, "benchmark": "scienceqa"}, "needs data_root"),
    ({"method": "both_lora", "rank": 2, "llm": "tiny-t5", "model_path": "/x"}, "model_path is only valid"),
    ({"method": "both_lora", "rank": 2, "llm": "gpt2"}, "unknown llm"),
    ({"method": "lora", "rank": 2}, "unknown method"),
    ({"method": "both_lora", "rank": 2, "augment": "yes"}, "augment must be"),
    ({"method": "both_lora", "rank": 2, "dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"method": "both_lora", "rank": 2, "dropout": -0.1}, r"dropout must be in \[0, 1\)"),
    ({"method": "both_lora", "rank": 2, "dropout": "0.1"}, "dropout must be a number"),
    ({"method": "both_lora", "rank": 2, "weight_dtype": "int8"}, "unknown weight_dtype"),
    ({"method": "both_lora", "rank": 2, "weight_dtype": "bf16", "precision": "fp32"}, "contradicts weight_dtype"),
    ({"method": "both_lora", "rank": 2, "weight_dtype": "fp16", "precision": "bf16"}, "contradicts weight_dtype"),
    ({"method": "both_lora", "rank": 2, "activation_checkpointing": "yes"}, "unknown activation_checkpointing"),
    ({"method": "both_lora", "rank": 2, "random_weights": True}, "random_weights needs a real preset"),
    ({"method": "both_lora", "rank": 2, "llm": "flan-t5-xl", "random_weights": True,
      "model_path": "/x"}, "random_weights needs a real preset"),
    ({"method": "both_lora", "rank": 2, "random_weights": "yes"}, "random_weights must be"),
])
def test_contradictions_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        TrialConfig.from_dict(bad)


def test_weight_dtype_defaults_to_bf16_for_real_presets_and_fp32_for_toys():
    real = TrialConfig.from_dict({"method": "both_lora", "rank": 2, "llm": "vicuna-7b"})
    toy = TrialConfig.from_dict({"method": "both_lora", "rank": 2, "llm": "tiny-llama"})
    assert (real.weight_dtype, toy.weight_dtype) == ("bf16", "fp32")
    assert real.activation_checkpointing == "auto" and not real.random_weights


def test_dropout_is_off_for_the_tiny_presets_and_the_models_own_for_the_real_ones():
    tiny = TrialConfig.from_dict({"method": "both_lora", "rank": 2, "llm": "tiny-llama"})
    real = TrialConfig.from_dict({"method": "both_lora", "rank": 2, "llm": "flan-t5-xl"})
    asked = TrialConfig.from_dict({"method": "both_lora", "rank": 2, "llm": "tiny-t5", "dropout": 0.1})
    assert (tiny.dropout, real.dropout, asked.dropout) == (0.0, None, 0.1)


def test_short_debug_run_clamps_the_default_min_epochs():
    cfg = TrialConfig.from_dict({"method": "both_lora", "rank": 1, "epochs": 2})
    assert cfg.min_epochs == 2


def test_config_is_frozen():
    cfg = TrialConfig.from_dict({"method": "both_lora", "rank": 1})
    with pytest.raises(AttributeError):
        cfg.lr = 1.0  # type: ignore[misc]
