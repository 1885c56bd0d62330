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
    """Autocast dtype (bf16) or None."""

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        return "fp32" if self.dtype is None else "bf16"


def resolve_precision(setting: str, device: torch.device | str) -> Precision:
    """"auto": bf16 autocast on a CUDA device that supports it, else fp32."""
    device_type = torch.device(device).type
    if setting == "fp32":
        return Precision(device_type, None)
    if setting == "bf16":
        return Precision(device_type, torch.bfloat16)
    if setting != "auto":
        raise ValueError(f"unknown precision {setting!r}; allowed: auto, fp32, bf16")
    if device_type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision(device_type, torch.bfloat16)
    return Precision(device_type, None)


def unwrap(model: nn.Module) -> nn.Module:
    """The InstructBLIP model under a peft wrapper (LoRA layers live inside it, in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def make_optimizer(model: nn.Module, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over trainable parameters; weight decay on >= 2-D tensors only (authors' code)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; apply_method must set requires_grad")
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas)


def lr_at_epoch(lr0: float, epoch: int, max_epoch: int) -> float:
    """Paper schedule: lr0 * (1 - e / max_epoch) for epoch e counted from 0; no warm-up."""
    return lr0 * (1.0 - epoch / max_epoch)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def forward_logits(model: nn.Module, batch: TrainBatch) -> torch.Tensor:
    """Full InstructBLIP forward (vision, Q-Former, LLM) -> logits aligned with ``batch.labels``."""
    extra = {}
    if batch.decoder_input_ids is not None:
        extra = {"decoder_input_ids": batch.decoder_input_ids,
                 "decoder_attention_mask": batch.decoder_attention_mask}
    out = unwrap(model)(pixel_values=batch.pixel_values, qformer_input_ids=batch.qformer_input_ids,
                        qformer_attention_mask=batch.qformer_attention_mask,
                        input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        use_cache=False, **extra)
    return out.logits


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row summed negative log-likelihood of the non-ignored labels, in fp32."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    return nll.sum(dim=1)


@dataclass(frozen=True)
class StepResult:
    loss: float
    """Mean NLL per target token over the whole effective batch."""
    samples: int
    """Problems in the effective batch."""
    finite: bool
    """False when the loss was NaN/inf; the optimizer step was then skipped."""


def train_step(model: nn.Module, micro_batches: Sequence[TrainBatch], optimizer: torch.optim.Optimizer,
               precision: Precision) -> StepResult:
    """One optimizer step accumulated over ``micro_batches`` (the accumulation state).

    Each micro-batch's backward uses (its summed NLL) / (target tokens of ALL micro-batches), so
    the accumulated gradient equals that of one big batch's token-mean loss.
    """
    total_tokens = sum(int((mb.labels != IGNORE).sum()) for mb in micro_batches)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for mb in micro_batches:
        with precision.autocast():
            logits = forward_logits(model, mb)
        loss = token_nll(logits, mb.labels).sum() / total_tokens
        loss.backward()
        loss_sum += float(loss.detach())
    finite = math.isfinite(loss_sum)
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss=loss_sum, samples=sum(mb.size for mb in micro_batches), finite=finite)


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i: i + size]
