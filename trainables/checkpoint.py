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

Checkpoints come back from storage a sweep may share (an S3 bucket, NFS), so reading one must
never run code: ``state.pt`` is unpickled with ``weights_only=True`` (tensors and plain
containers only; a pickle that names any other global is refused), tensors are safetensors and
``meta.json`` is bounded JSON. A checkpoint that does not have the shape this module writes, or
that belongs to another cell, raises ``CheckpointError`` naming the file.
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
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
META_MAX_BYTES = 1 << 20
"""meta.json holds a config and three numbers: anything larger was not written here."""
LOOP_KEYS = ("epoch", "best_val_acc", "best_epoch", "since_best", "ref_loss")
"""Loop-state keys every checkpoint has (final_metrics is added on the last epoch)."""
IDENTITY_KEYS = ("method", "sublayer", "rank", "llm", "benchmark")
"""The cell a checkpoint belongs to: a trial refuses another cell's checkpoint."""


class CheckpointError(ValueError):
    """A checkpoint that is not one a trial wrote (or not this trial's); names the file."""


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
    """meta.json of a checkpoint: bounded, valid JSON, an object with a config object."""
    file = Path(path) / META
    if not file.is_file():
        raise CheckpointError(f"{path} is not a trial checkpoint (no {META})")
    if file.stat().st_size > META_MAX_BYTES:
        raise CheckpointError(f"{file}: {file.stat().st_size} bytes, more than a trial writes "
                              f"({META_MAX_BYTES}); refused")
    try:
        meta = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{file}: not the JSON a trial writes ({_short(err)})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{file}: not the JSON a trial writes (no config object)")
    return meta


def _short(err: BaseException, limit: int = 160) -> str:
    """The telling line of an exception, at most ``limit`` characters (torch's unpickling errors
    are paragraphs of advice; the culprit is the 'GLOBAL x.y' line)."""
    text = str(err)
    found = re.search(r"(?:unsupported|Unsupported)[^\n]*GLOBAL [^\n]*", text)
    line = found.group(0) if found else text.strip().splitlines()[0] if text.strip() else repr(err)
    return line[:limit] + ("..." if len(line) > limit else "")


def read_state(path: Path) -> dict[str, Any]:
    """state.pt without running code: weights_only unpickling, then the shape a trial writes."""
    file = Path(path) / STATE
    if not file.is_file():
        raise CheckpointError(f"{path} is not a trial checkpoint (no {STATE})")
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile,
            AttributeError, TypeError, ValueError, KeyError, IndexError) as err:
        raise CheckpointError(f"{file}: refused, not a state a trial writes ({_short(err)}); "
                              f"delete this checkpoint or the trial's directory") from None
    loop = saved.get("loop") if isinstance(saved, dict) else None
    if not isinstance(loop, dict) or not isinstance(saved.get("optimizer"), dict) \
            or any(k not in loop for k in LOOP_KEYS):
        raise CheckpointError(f"{file}: refused, not a state a trial writes (expected "
                              f"{{optimizer, loop}} with loop keys {', '.join(LOOP_KEYS)})")
    return saved


def verify_checkpoint(path: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything in a checkpoint that is read before tensors are loaded, checked without running
    code; with ``config``, the checkpoint must belong to that cell. Returns the state."""
    meta = read_meta(path)
    state = read_state(path)
    if config is not None:
        theirs = {k: meta["config"].get(k) for k in IDENTITY_KEYS}
        ours = {k: config.get(k) for k in IDENTITY_KEYS}
        if theirs != ours:
            raise CheckpointError(f"{Path(path) / META}: checkpoint of cell {theirs}, not of this "
                                  f"trial's {ours}; refused")
    return state


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    config: dict[str, Any] | None = None
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore the ``last`` tensors (and optimizer) into the model; returns (loop_state, best_state).

    ``config`` (the trial's): refuse a checkpoint of another cell. Nothing here unpickles code.
    """
    path = Path(path)
    saved = verify_checkpoint(path, config)
    load_tensors(model, path / "best")
    best = trainable_state(model)
    load_tensors(model, path / "last")
    if optimizer is not None:
        optimizer.load_state_dict(saved["optimizer"])
    return saved["loop"], best
