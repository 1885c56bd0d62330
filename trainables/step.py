"""One optimizer step, the optimizer and its schedule, precision; pure functions.

Why pure: the epoch loop, the tests and the throughput benchmark all call the same
``train_step(model, micro_batches, optimizer, precision)``; nothing is hidden in globals, so
"16 x 1" and "8 x 2" accumulation give the same update (up to float rounding): the loss is the
summed token NLL of all micro-batches divided by their total number of target tokens.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables.batching import IGNORE, TrainBatch


@dataclass(frozen=True)
class Precision:
    """Autocast settings: ``dtype`` None means plain fp32."""

    device_type: str
    """``"cuda"`` or ``"cpu"``."""
    dtype: torch.dtype | None
    """Autocast dtype (bf16 or fp16) or None."""

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling (its gradients underflow); bf16 and fp32 do not."""
        return torch.amp.GradScaler(self.device_type) if self.dtype == torch.float16 else None


_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(setting: str, device: torch.device | str, weight_dtype: str = "fp32") -> Precision:
    """The autocast a trial computes in.

    "auto": weights stored in bf16/fp16 compute in that dtype (a frozen half-precision Linear
    cannot take fp32 inputs, and the trainable fp32 masters are cast per op by autocast); fp32
    weights get bf16 autocast on a CUDA device that supports it, else plain fp32.
    TrialConfig rejects contradictions (fp32 compute with half-precision weights).
    """
    device_type = torch.device(device).type
    if setting == "fp32":
        return Precision(device_type, None)
    if setting in _AUTOCAST:
        return Precision(device_type, _AUTOCAST[setting])
    if setting != "auto":
        raise ValueError(f"unknown precision {setting!r}; allowed: auto, fp32, bf16, fp16")
    if weight_dtype in _AUTOCAST:
        return Precision(device_type, _AUTOCAST[weight_dtype])
    if device_type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision(device_type, torch.bfloat16)
    return Precision(device_type, None)


def upcast_trainables(model: nn.Module) -> int:
    """Keep every trainable tensor as an fp32 master (the frozen ones stay in the storage
    dtype): AdamW updates of bf16 weights would round away small steps. Returns how many
    tensors were cast. peft already creates LoRA weights in fp32 (autocast_adapter_dtype)."""
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast


def set_activation_checkpointing(model: nn.Module, on: bool) -> None:
    """Recompute each transformer layer's activations in backward instead of keeping them:
    gradients reach the Q-Former through the whole frozen LLM in every method, so its
    activations dominate training memory. Non-reentrant checkpointing (gradients flow although
    the layer inputs' weights are frozen). Only active in training mode; scoring is unaffected.
    Not the ViT: it keeps nothing for backward (frozen, no gradient flows into it), while a
    checkpointed layer would keep its input (~0.45 GB at micro-batch 16 for EVA ViT-g)."""
    m = unwrap(model)
    for part in (m.language_model, m.qformer):
        if on:
            part.activation_checkpointing_enable({"use_reentrant": False})
        elif part.is_activation_checkpointing:
            part.activation_checkpointing_disable()


_FLOAT_DROPOUT_ATTRS = ("dropout", "attention_dropout")
"""Attributes holding a dropout probability as a float, read at every forward (transformers'
attention modules pass it to the attention kernel: T5 ``dropout``, Q-Former/ViT/LLaMA
``attention_dropout``); every other dropout is an ``nn.Dropout`` module."""


def set_dropout(model: nn.Module, p: float) -> int:
    """Set every dropout of the model (nn.Dropout modules and the attention modules' float
    rates) to ``p``; returns how many were set. Why after building: the shipped and real
    weights load into their own configs, and this is a fine-tuning choice, not the model's."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
            count += 1
        for attr in _FLOAT_DROPOUT_ATTRS:
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, p)
                count += 1
    return count


def unwrap(model: nn.Module) -> nn.Module:
    """The InstructBLIP model under a peft wrapper (LoRA layers live inside it, in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def make_optimizer(model: nn.Module, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over trainable parameters; weight decay on >= 2-D tensors only (authors' code).
    ``foreach``: one multi-tensor kernel per update op instead of a Python loop over the
    tensors (PyTorch picks it by itself only on CUDA); the same updates, bit for bit on CPU
    (tests/trainables/test_step.py), and 2-4% of a tiny trial's epoch saved (measured on
    tiny-t5 llm_lora/all r4, which updates ~165 tensors: the whole Q-Former plus LoRA)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; apply_method must set requires_grad")
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, foreach=True)


def lr_at_epoch(lr0: float, epoch: int, max_epoch: int) -> float:
    """Paper schedule: lr0 * (1 - e / max_epoch) for epoch e counted from 0; no warm-up."""
    return lr0 * (1.0 - epoch / max_epoch)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def forward_logits(model: nn.Module, batch: TrainBatch, **extra: Any) -> torch.Tensor:
    """Full InstructBLIP forward (vision, Q-Former, LLM) -> logits aligned with ``batch.labels``
    (``extra``: further keyword arguments of the forward)."""
    if batch.decoder_input_ids is not None:
        extra.update(decoder_input_ids=batch.decoder_input_ids,
                     decoder_attention_mask=batch.decoder_attention_mask)
    out = unwrap(model)(pixel_values=batch.pixel_values, qformer_input_ids=batch.qformer_input_ids,
                        qformer_attention_mask=batch.qformer_attention_mask,
                        input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        use_cache=False, **extra)
    return out.logits


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row summed negative log-likelihood of the non-ignored labels, in fp32."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    return nll.sum(dim=1)


def target_nll_sum(model: nn.Module, batch: TrainBatch) -> torch.Tensor:
    """Summed NLL of the batch's target tokens (labels != IGNORE), in fp32.

    Why not ``token_nll(forward_logits(...)).sum()``: a decoder-only LLM would project every
    prompt position onto the vocabulary and log-softmax it (one tiny-llama batch of 16,
    forward + backward: 1.15 s that way, 0.85 s this way, measured on the shared 2 cores under
    load). transformers' boolean
    ``logits_to_keep`` projects only the target positions (flattened, in row-major order, as
    ``labels[keep]``). An encoder-decoder's logits are the few decoder positions already.
    Training needs only the total; scoring keeps the per-row ``token_nll``."""
    keep = batch.labels != IGNORE
    if batch.decoder_input_ids is None:
        logits = forward_logits(model, batch, logits_to_keep=keep)
    else:
        logits = forward_logits(model, batch)[keep]
    return F.cross_entropy(logits.float(), batch.labels[keep], reduction="sum")


@dataclass(frozen=True)
class StepResult:
    loss: float
    """Mean NLL per target token over the whole effective batch."""
    samples: int
    """Problems in the effective batch."""
    finite: bool
    """False when the loss was NaN/inf; the optimizer step was then skipped."""


def train_step(model: nn.Module, micro_batches: Sequence[TrainBatch], optimizer: torch.optim.Optimizer,
               precision: Precision, scaler: torch.amp.GradScaler | None = None) -> StepResult:
    """One optimizer step accumulated over ``micro_batches`` (the accumulation state).

    Each micro-batch's backward uses (its summed NLL) / (target tokens of ALL micro-batches), so
    the accumulated gradient equals that of one big batch's token-mean loss. ``scaler`` (fp16
    only, Precision.grad_scaler) scales the loss and skips steps with inf/NaN gradients.
    """
    total_tokens = sum(int((mb.labels != IGNORE).sum()) for mb in micro_batches)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for mb in micro_batches:
        with precision.autocast():
            nll = target_nll_sum(model, mb)
        loss = nll / total_tokens
        (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_sum += float(loss.detach())
    finite = math.isfinite(loss_sum)
    if finite and scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    elif finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss=loss_sum, samples=sum(mb.size for mb in micro_batches), finite=finite)


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i: i + size]
