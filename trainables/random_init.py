"""Real architectures without weights: build a full-size InstructBLIP with cheap, deterministic
random weights, directly in its storage dtype.

Why: memory, speed and the whole real-size code path (batching, train step, scoring,
checkpoints) must be checkable without downloading 16-30 GB of checkpoints. transformers'
default init of the 4 B parameters of InstructBLIP-Flan-T5-XL takes ~64 s on 2 cores (fp32,
truncated normals, then a cast) and needs the fp32 copy in memory; here:

1. the model is constructed under ``transformers.initialization.no_init_weights`` with the
   default dtype set to the storage dtype: parameters are allocated once, uninitialised, in
   bf16 (buffers such as position ids and rotary frequencies are still computed by the
   modules' constructors; the embedding ties that ``init_weights`` would make are made here);
2. every parameter is filled from one bank of 4 M N(0, 1) draws (seeded), tiled from an offset
   derived from the parameter's name and scaled by the config's ``initializer_range``; norm
   weights are 1 and biases 0. Filling is a memory copy (~1-2 GB/s on 2 cores, page faults
   included): about 10 s for Flan-T5-XL instead of ~64 s.

The values are random (not a trained checkpoint), so accuracies mean nothing; shapes, dtypes,
memory and FLOPs are the real ones. Same ``seed`` -> bit-identical weights.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import (
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    PreTrainedTokenizerBase,
)
from transformers.initialization import no_init_weights

BANK_SIZE = (1 << 22) + 7
"""Draws in the bank (odd, so matrix rows do not line up with its period)."""


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_random(config: InstructBlipConfig, device: str | torch.device, dtype: torch.dtype,
                 seed: int, *, untie: bool) -> InstructBlipForConditionalGeneration:
    """The model of ``config`` on ``device`` in ``dtype`` with deterministic random weights.
    ``untie``: give the T5 LLM its own LM head (presets.untie_lm_head)."""
    from trainables.presets import untie_lm_head
    with no_init_weights(), _default_dtype(dtype), torch.device(device):
        model = InstructBlipForConditionalGeneration(config)
        model.tie_weights()  # no_init_weights also skips init_weights(), which ties embeddings
        if untie:
            untie_lm_head(model)
    fill_random(model, seed, std=config.initializer_range)
    return model


@torch.no_grad()
def fill_random(model: nn.Module, seed: int, std: float) -> None:
    """Norm weights 1, biases 0, everything else ``std`` x tiled N(0, 1) draws from ``seed``."""
    norms = {id(p) for m in model.modules() if "Norm" in type(m).__name__ for p in m.parameters(recurse=False)}
    banks: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randn(BANK_SIZE, generator=gen)
    for name, param in model.named_parameters():
        if id(param) in norms and name.endswith("weight"):
            param.fill_(1.0)
        elif name.endswith("bias"):
            param.zero_()
        else:
            key = (param.dtype, param.device)
            if key not in banks:  # doubled, so any offset can copy a full bank-length run
                bank = (draws * std).to(device=param.device, dtype=param.dtype)
                banks[key] = torch.cat([bank, bank])
            _tile(param.view(-1), banks[key], zlib.crc32(name.encode()) % BANK_SIZE)


def _tile(flat: torch.Tensor, bank: torch.Tensor, offset: int) -> None:
    for start in range(0, flat.numel(), BANK_SIZE):
        n = min(BANK_SIZE, flat.numel() - start)
        flat[start: start + n].copy_(bank[offset: offset + n])


def standin_tokenizers(family: str) -> tuple[PreTrainedTokenizerBase, PreTrainedTokenizerBase]:
    """(Q-Former, LLM) tokenizers for a random real build: the shipped Q-Former tokenizer (ids
    < 1024 fit the real 30523-token Q-Former vocabulary) and a SentencePiece LLM tokenizer with
    the real checkpoint's special-token ids (``<image>`` where the real config expects it)."""
    from trainables import standin_tokenizers as st
    from trainables.presets import load_toy_tokenizers
    qformer_tok = load_toy_tokenizers(family)[0]
    return qformer_tok, (st.t5_tokenizer() if family == "t5" else st.llama_tokenizer())
