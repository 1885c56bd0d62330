"""Which modules get LoRA and which tensors train, per method of the paper's Table 1.

Why one module: the trial, the dry-run planner and the parameter accounting must agree on
exactly the same targets. Targets are anchored regular expressions over Hugging Face module
names (peft full-matches a string ``target_modules`` against each module name), so
``attention.attention.query`` (self-attention) can never catch ``crossattention...`` and the
Q-Former FFN's ``output.dense`` can never catch ``attention.output.dense``.

What trains besides LoRA (paper_spec.md): the learned ``query_tokens``, ``language_projection``
and ``vision_model.post_layernorm`` always; the whole Q-Former in the baseline and llm_lora rows;
in qformer_lora / both_lora rows the Q-Former's own weights, norms and biases stay frozen. The
ViT never trains. LoRA adapters stay unmerged (peft's default) so checkpoints hold adapters only.
"""
from __future__ import annotations

import re

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from trainables.vocab import check_choice, check_method

LORA_ALPHA = 8
"""LoRA scaling numerator (authors' configs); the effective scale is alpha / r."""
LORA_DROPOUT = 0.0
"""Authors' configs: no dropout on the LoRA path."""
FAMILIES: tuple[str, ...] = ("t5", "llama")

_QF = r"qformer\.encoder\.layer\.\d+\."
QFORMER_PATTERNS: dict[str, str] = {
    # Self-attention query/value of every layer (not key, not the attention output dense).
    "self_attn": _QF + r"attention\.attention\.(query|value)",
    # Cross-attention (only the layers that have it): query/key/value and its output dense.
    "cross_attn": _QF + r"crossattention\.(attention\.(query|key|value)|output\.dense)",
    # Both FFN linears of the text branch and of the query branch.
    "ffn": _QF + r"(intermediate|output|intermediate_query|output_query)\.dense",
}
_T5 = r"language_model\.(encoder|decoder)\.block\.\d+\.layer\.\d+\."
_LLAMA = r"language_model\.model\.layers\.\d+\."
LLM_PATTERNS: dict[str, dict[str, str]] = {
    # T5 names all attention projections q/k/v/o: encoder self, decoder self and cross attention.
    "t5": {"attn": _T5 + r"(SelfAttention|EncDecAttention)\.(q|v)",
           "ffn": _T5 + r"DenseReluDense\.(wi_0|wi_1|wo)"},
    "llama": {"attn": _LLAMA + r"self_attn\.(q_proj|v_proj)",
              "ffn": _LLAMA + r"mlp\.(gate_proj|up_proj|down_proj)"},
}
ALWAYS_TRAINABLE_PREFIXES: tuple[str, ...] = (
    "query_tokens", "language_projection.", "vision_model.post_layernorm.",
)


def _union(patterns: list[str]) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


def target_regex(method: str, sublayer: str, family: str) -> str | None:
    """The anchored regex (for peft's full match) of the LoRA targets; None for the baseline."""
    check_method(method, sublayer, 1)
    check_choice("family", family, FAMILIES)
    patterns: list[str] = []
    if method in ("qformer_lora", "both_lora"):
        keys = list(QFORMER_PATTERNS) if sublayer == "all" else [sublayer]
        patterns += [QFORMER_PATTERNS[k] for k in keys]
    if method in ("llm_lora", "both_lora"):
        keys = ["attn", "ffn"] if sublayer == "all" else [sublayer]
        patterns += [LLM_PATTERNS[family][k] for k in keys]
    return _union(patterns) if patterns else None


def base_model_of(model: nn.Module) -> nn.Module:
    """The InstructBLIP model itself, whether or not peft wrapped it (names without prefix)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def lora_target_names(model: nn.Module, method: str, sublayer: str, family: str) -> list[str]:
    """Names (in the unwrapped model) of the nn.Linear modules that get LoRA, sorted."""
    regex = target_regex(method, sublayer, family)
    if regex is None:
        return []
    pattern = re.compile(regex)
    names = []
    for name, module in base_model_of(model).named_modules():
        if pattern.fullmatch(name):
            # A peft-wrapped model holds lora.Linear at the same name; count both forms.
            if isinstance(module, nn.Linear) or hasattr(module, "base_layer"):
                names.append(name)
    return sorted(names)


def lora_param_count(model: nn.Module, method: str, sublayer: str, family: str, rank: int) -> dict[str, int]:
    """LoRA parameters per component computed from target shapes: r * (in + out) per Linear.

    Why analytic: accounting on real-size meta models must not need a peft wrapper per cell.
    """
    counts = {"qformer": 0, "llm": 0}
    modules = dict(base_model_of(model).named_modules())
    for name in lora_target_names(model, method, sublayer, family):
        layer = modules[name]
        layer = getattr(layer, "base_layer", layer)
        component = "qformer" if name.startswith("qformer.") else "llm"
        counts[component] += rank * (layer.in_features + layer.out_features)
    return counts


def full_trainable_prefixes(method: str) -> tuple[str, ...]:
    """Prefixes of parameters that train fully (not via LoRA) for this method."""
    if method in ("baseline", "llm_lora"):
        return ALWAYS_TRAINABLE_PREFIXES + ("qformer.",)
    return ALWAYS_TRAINABLE_PREFIXES


def set_full_trainables(model: nn.Module, method: str) -> None:
    """requires_grad on the non-LoRA tensors that train; everything else except LoRA is frozen."""
    prefixes = full_trainable_prefixes(method)
    for name, param in base_model_of(model).named_parameters():
        if "lora_" in name:
            continue
        param.requires_grad_(name.startswith(prefixes))


def check_cell(method: str, sublayer: str, rank: int) -> None:
    """vocab.check_method plus: the baseline has no LoRA, so its rank must be 0."""
    check_method(method, sublayer, rank)
    if method == "baseline" and rank != 0:
        raise ValueError(f"rank must be 0 for method 'baseline' (no LoRA), got {rank!r}")


def apply_method(model: nn.Module, method: str, sublayer: str, rank: int, family: str) -> nn.Module:
    """Prepare ``model`` for one Table-1 row: peft-wrap LoRA rows, set requires_grad everywhere.

    Returns the peft ``PeftModel`` (LoRA rows) or ``model`` itself (baseline, rank 0). The
    PeftModel forwards all keyword inputs (pixel_values, qformer_input_ids, ...) to the model.
    """
    check_cell(method, sublayer, rank)
    check_choice("family", family, FAMILIES)
    if method == "baseline":
        set_full_trainables(model, method)
        return model
    regex = target_regex(method, sublayer, family)
    model.requires_grad_(False)
    config = LoraConfig(
        r=rank, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, bias="none",
        target_modules=regex, init_lora_weights=True,  # B = 0: the wrapped model starts unchanged
    )
    wrapped = get_peft_model(model, config)
    set_full_trainables(wrapped, method)
    return wrapped


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters with requires_grad, as in ``model.named_parameters()``."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def is_lora_param(name: str) -> bool:
    """True for peft LoRA tensors (lora_A / lora_B weights)."""
    return ".lora_A." in name or ".lora_B." in name


def check_vit_frozen(model: nn.Module) -> None:
    """Raise if anything in the ViT except post_layernorm would train (a guard for callers)."""
    bad = [n for n, p in base_model_of(model).named_parameters()
           if p.requires_grad and n.startswith("vision_model.")
           and not n.startswith("vision_model.post_layernorm.")]
    if bad:
        raise ValueError(f"ViT parameters must stay frozen, found trainable: {bad[:3]}")


__all__ = [
    "apply_method", "check_cell", "lora_target_names", "base_model_of", "full_trainable_prefixes",
    "lora_param_count", "target_regex",
    "set_full_trainables", "trainable_names", "is_lora_param", "check_vit_frozen",
    "LORA_ALPHA", "LORA_DROPOUT",
]
