"""LLM families as data: LoRA target patterns, input layout, scorer kind and paper recipe.

Why data: batching, scoring, LoRA targeting, the planner and the recipes all depend on the LLM
family; each reads its answer from the ``Family`` spec here instead of branching on the
family's name, so a third family is one entry in ``FAMILIES`` and a family without an entry
fails with one error naming it (``family_spec``) instead of silently taking another's path.

The input layout lives in ``Family.prefix`` (the token ids before the answer): batching calls
it and nothing else decides where image tokens, BOS and EOS go.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trainables.defaults import PAPER_LLAMA, PAPER_T5, Recipe

PrefixFn = Callable[[Sequence[int], Sequence[int], "int | None", int], list[int]]
"""(image token ids, prompt ids, bos id, eos id) -> the LLM input ids before the answer."""


def encoder_prefix(images: Sequence[int], prompt: Sequence[int], bos: int | None,
                   eos: int) -> list[int]:
    """T5 encoder input: image tokens + prompt + </s>; the answer goes to the decoder."""
    return [*images, *prompt, eos]


def decoder_prefix(images: Sequence[int], prompt: Sequence[int], bos: int | None,
                   eos: int) -> list[int]:
    """LLaMA: image tokens, THEN the tokenizer's BOS, then the prompt; the answer (and </s>)
    follows in the same sequence. InstructBlipProcessor: "BLIP expects image tokens to be at the
    beginning even before BOS token"; LAVIS prepends the query embeddings to the BOS-led prompt."""
    if bos is None:
        raise ValueError("a LLaMA-family tokenizer needs a bos_token (LAVIS/HF Vicuna: '</s>')")
    return [*images, bos, *prompt]


@dataclass(frozen=True)
class Family:
    """What the rest of the code needs to know about one LLM family."""

    name: str
    model_type: str
    """``text_config.model_type`` of the Hugging Face config (how a checkpoint names it)."""
    encoder_decoder: bool
    """True: the answer is scored by a decoder over the encoded prompt (T5); False: the answer
    continues the prompt in one decoder-only sequence (LLaMA). Picks collate and scorer."""
    llm_targets: dict[str, str]
    """LLM sublayer -> anchored regex (peft full match) of the Linear modules LoRA targets."""
    prefix: PrefixFn
    """Input layout before the answer (see module docstring); answers are tokenized standalone."""
    recipe: Recipe
    """The paper's training recipe for this family's real checkpoints."""


_T5 = r"language_model\.(encoder|decoder)\.block\.\d+\.layer\.\d+\."
_LLAMA = r"language_model\.model\.layers\.\d+\."

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("t5", model_type="t5", encoder_decoder=True,
           # T5 names all attention projections q/k/v/o: encoder self, decoder self and cross.
           llm_targets={"attn": _T5 + r"(SelfAttention|EncDecAttention)\.(q|v)",
                        "ffn": _T5 + r"DenseReluDense\.(wi_0|wi_1|wo)"},
           prefix=encoder_prefix, recipe=PAPER_T5),
    Family("llama", model_type="llama", encoder_decoder=False,
           llm_targets={"attn": _LLAMA + r"self_attn\.(q_proj|v_proj)",
                        "ffn": _LLAMA + r"mlp\.(gate_proj|up_proj|down_proj)"},
           prefix=decoder_prefix, recipe=PAPER_LLAMA),
)}


def family_spec(name: str) -> Family:
    """The Family named ``name``; an unknown family fails here, naming it."""
    if name not in FAMILIES:
        raise ValueError(f"unknown LLM family {name!r}: trainables.families has no spec for it "
                         f"(known: {', '.join(FAMILIES)}); a family needs LoRA target patterns, "
                         f"an input layout, a scorer kind and a recipe there")
    return FAMILIES[name]


def family_for_model_type(model_type: str, source: str) -> Family:
    """The Family of a Hugging Face checkpoint's LLM (``text_config.model_type``)."""
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    raise ValueError(f"{source}: LLM type {model_type!r} has no family spec in "
                     f"trainables.families (known: "
                     f"{', '.join(f.model_type for f in FAMILIES.values())})")
