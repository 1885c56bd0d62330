"""Adapter-only checkpoints: trainable tensors, optimizer state and loop state; never the base.

Layout of a checkpoint directory::

    meta.json                 trial config, epoch, best epoch/accuracy, sizes (human-readable)
    state.pt                  optimizer state + loop state (epoch, best metrics, reference loss, ...)
    last/  best/              the current and the best-val trainable tensors, each as
      adapter/                  peft ``save_pretrained`` layout of the LoRA tensors (LoRA methods)
      extra.safetensors         the other trainable tensors (query tokens, language_projection,
                                ViT post-layernorm, the Q-Former where fully trained), named as in
                                the plain InstructBLIP model

Why both: ``last`` resumes a stopped trial exactly, ``best`` is the trial's result (the test split
is scored with it; export merges it). The frozen base is rebuilt from the preset (tiny presets:
deterministically from the trial seed), so it is never stored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from trainables.peft_targeting import is_lora_param
from trainables.step import unwrap

META = "meta.json"
STATE = "state.pt"
ADAPTER = "adapter"
EXTRA = "extra.safetensors"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the trainable tensors, named as in ``model.named_parameters()``."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's trainable tensors; names must match exactly."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        raise ValueError(f"trainable state does not match the model: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])


def _plain_name(model: nn.Module, name: str) -> str:
    """Name of a parameter in the unwrapped InstructBLIP model (peft adds base_model.model.)."""
    prefix = "base_model.model."
    return name[len(prefix):] if model is not unwrap(model) and name.startswith(prefix) else name


def save_tensors(model: nn.Module, state: dict[str, torch.Tensor], out: Path) -> None:
    """Write ``state`` (from trainable_state) as adapter/ (peft format) + extra.safetensors."""
    out.mkdir(parents=True, exist_ok=True)
    lora = {n: t for n, t in state.items() if is_lora_param(n)}
    if lora:
        adapter = out / ADAPTER
        adapter.mkdir(exist_ok=True)
        model.peft_config["default"].save_pretrained(str(adapter))
        peft_state = get_peft_model_state_dict(model, state_dict=lora)
        save_file({k: v.contiguous() for k, v in peft_state.items()}, str(adapter / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
    extra = {_plain_name(model, n): t.contiguous() for n, t in state.items() if not is_lora_param(n)}
    save_file(extra, str(out / EXTRA))


def load_tensors(model: nn.Module, src: Path) -> None:
    """Load a save_tensors directory into ``model`` (peft-wrapped for LoRA methods)."""
    adapter = src / ADAPTER / "adapter_model.safetensors"
    if adapter.is_file():
        if model is unwrap(model):
            raise ValueError(f"{src} holds LoRA adapters but the model is not peft-wrapped")
        result = set_peft_model_state_dict(model, load_file(str(adapter)))
        if result.unexpected_keys:
            raise ValueError(f"{adapter}: adapter tensors the model lacks: {result.unexpected_keys[:3]}")
    extra = load_file(str(src / EXTRA))
    params = dict(unwrap(model).named_parameters())
    unknown = sorted(set(extra) - set(params))
    if unknown:
        raise ValueError(f"{src / EXTRA}: tensors the model lacks: {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in extra.items():
            params[name].copy_(tensor)


def save_checkpoint(out: Path, model: nn.Module, *, last: dict[str, torch.Tensor],
                    best: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    loop_state: dict[str, Any], config: dict[str, Any]) -> int:
    """Write a full checkpoint to ``out``; returns its size in bytes."""
    out = Path(out)
    save_tensors(model, last, out / "last")
    save_tensors(model, best, out / "best")
    torch.save({"optimizer": optimizer.state_dict(), "loop": loop_state}, out / STATE)
    meta = {"config": config, "epoch": loop_state.get("epoch"), "best_epoch": loop_state.get("best_epoch"),
            "best_val_acc": loop_state.get("best_val_acc")}
    (out / META).write_text(json.dumps(meta, indent=2))
    size = checkpoint_bytes(out)
    return size


def checkpoint_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def read_meta(path: Path) -> dict[str, Any]:
    file = Path(path) / META
    if not file.is_file():
        raise ValueError(f"{path} is not a trial checkpoint (no {META})")
    return json.loads(file.read_text())


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore the ``last`` tensors (and optimizer) into the model; returns (loop_state, best_state)."""
    path = Path(path)
    read_meta(path)
    load_tensors(model, path / "best")
    best = trainable_state(model)
    load_tensors(model, path / "last")
    saved = torch.load(path / STATE, map_location="cpu", weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(saved["optimizer"])
    return saved["loop"], best
