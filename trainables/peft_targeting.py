"""Which modules get LoRA and which tensors train, per PEFT setup (trainables.methods).

Why one module: the trial, the dry-run planner and the parameter accounting must agree on
exactly the same targets. Targets are anchored regular expressions over Hugging Face module
names (peft full-matches a string ``target_modules`` against each module name), so
``attention.attention.query`` (self-attention) can never catch ``crossattention...`` and the
Q-Former FFN's ``output.dense`` can never catch ``attention.output.dense``.

What trains besides LoRA (paper_spec.md): the learned ``query_tokens``, ``language_projection``
and ``vision_model.post_layernorm`` always; the whole Q-Former in the baseline and llm_lora rows;
in qformer_lora / both_lora rows the Q-Former's own weights, norms and biases stay frozen. The
ViT never trains. LoRA adapters stay unmerged (peft's default) so checkpoints hold adapters only.
The adapter variant (DoRA, rsLoRA, PiSSA, ...) only changes the ``LoraConfig`` arguments, from
its ``Adapter`` entry; the targets are the same Linear layers for every variant.
"""
from __future__ import annotations

import re

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from trainables.families import Family
from trainables.methods import ALL, PeftSetup

LORA_DROPOUT = 0.0
"""Authors' configs: no dropout on the LoRA path (alpha: trainables.methods.ALPHA_RULES)."""

_QF = r"qformer\.encoder\.layer\.\d+\."
QFORMER_PATTERNS: dict[str, str] = {
    # Self-attention query/value of every layer (not key, not the attention output dense).
    "self_attn": _QF + r"attention\.attention\.(query|value)",
    # Cross-attention (only the layers that have it): query/key/value and its output dense.
    "cross_attn": _QF + r"crossattention\.(attention\.(query|key|value)|output\.dense)",
    # Both FFN linears of the text branch and of the query branch.
    "ffn": _QF + r"(intermediate|output|intermediate_query|output_query)\.dense",
}
ALWAYS_TRAINABLE_PREFIXES: tuple[str, ...] = (
    "query_tokens", "language_projection.", "vision_model.post_layernorm.",
)
COMPONENT_PREFIXES: dict[str, str] = {"qformer": "qformer.", "llm": "language_model."}
"""Parameter-name prefix of each component a method may train fully."""
LORA_PARAM_MARKERS: tuple[str, ...] = (".lora_A.", ".lora_B.", ".lora_magnitude_vector.")
"""peft's adapter tensors: LoRA A/B and DoRA's magnitude vectors."""


def _union(patterns: list[str]) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


def component_patterns(component: str, family: Family) -> dict[str, str]:
    """Sublayer -> target regex inside one component (Q-Former: fixed; LLM: the family's)."""
    return QFORMER_PATTERNS if component == "qformer" else family.llm_targets


def target_regex(peft: PeftSetup, family: Family) -> str | None:
    """The anchored regex (for peft's full match) of the LoRA targets; None without LoRA."""
    patterns: list[str] = []
    for component in peft.spec.lora:
        table = component_patterns(component, family)
        keys = list(table) if peft.sublayer == ALL else [peft.sublayer]
        patterns += [table[k] for k in keys]
    return _union(patterns) if patterns else None


def base_model_of(model: nn.Module) -> nn.Module:
    """The InstructBLIP model itself, whether or not peft wrapped it (names without prefix)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def lora_target_names(model: nn.Module, peft: PeftSetup, family: Family) -> list[str]:
    """Names (in the unwrapped model) of the nn.Linear modules that get LoRA, sorted."""
    regex = target_regex(peft, family)
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


def lora_param_count(model: nn.Module, peft: PeftSetup, family: Family) -> dict[str, int]:
    """Adapter parameters per component from target shapes: r * (in + out) per Linear, plus
    out_features per Linear for a variant with a magnitude vector (DoRA).

    Why analytic: accounting on real-size meta models must not need a peft wrapper per cell.
    """
    counts = {"qformer": 0, "llm": 0}
    modules = dict(base_model_of(model).named_modules())
    magnitude = peft.adapter_spec.magnitude_per_linear
    for name in lora_target_names(model, peft, family):
        layer = modules[name]
        layer = getattr(layer, "base_layer", layer)
        component = "qformer" if name.startswith("qformer.") else "llm"
        counts[component] += peft.rank * (layer.in_features + layer.out_features) \
            + (layer.out_features if magnitude else 0)
    return counts


def full_trainable_prefixes(peft: PeftSetup) -> tuple[str, ...]:
    """Prefixes of parameters that train fully (not via LoRA) for this setup."""
    return ALWAYS_TRAINABLE_PREFIXES + tuple(COMPONENT_PREFIXES[c] for c in peft.spec.full)


def set_full_trainables(model: nn.Module, peft: PeftSetup) -> None:
    """requires_grad on the non-LoRA tensors that train; everything else except LoRA is frozen."""
    prefixes = full_trainable_prefixes(peft)
    for name, param in base_model_of(model).named_parameters():
        if "lora_" in name:
            continue
        param.requires_grad_(name.startswith(prefixes))


def lora_config(peft: PeftSetup, family: Family) -> LoraConfig:
    """The peft config of a LoRA setup: rank, the alpha rule's alpha, the variant's options."""
    return LoraConfig(
        r=peft.rank, lora_alpha=peft.lora_alpha, lora_dropout=LORA_DROPOUT, bias="none",
        target_modules=target_regex(peft, family),
        # Default init: B = 0, so the wrapped model starts unchanged (PiSSA overrides it).
        **{"init_lora_weights": True, **peft.adapter_spec.lora_kwargs})


def apply_method(model: nn.Module, peft: PeftSetup, family: Family) -> nn.Module:
    """Prepare ``model`` for one setup: peft-wrap LoRA rows, set requires_grad everywhere.

    Returns the peft ``PeftModel`` (LoRA rows) or ``model`` itself (no LoRA). The PeftModel
    forwards all keyword inputs (pixel_values, qformer_input_ids, ...) to the model.
    """
    if not peft.spec.has_lora:
        set_full_trainables(model, peft)
        return model
    model.requires_grad_(False)
    wrapped = get_peft_model(model, lora_config(peft, family))
    set_full_trainables(wrapped, peft)
    return wrapped


def is_lora_param(name: str) -> bool:
    """True for peft adapter tensors (LoRA A / B weights, DoRA magnitudes)."""
    return any(marker in name for marker in LORA_PARAM_MARKERS)
