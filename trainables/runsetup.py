"""What a trial runs on and how: its device (from Ray's assignment), its memory budget, and the
micro-batch / scoring batch / checkpointing that fit it (trainables.memory).

Why a module: Ray 2.60 no longer hides GPUs from actors that reserved none, so "cuda if
available" would put every 0-GPU trial on cuda:0 next to the trials that did reserve it. The
device therefore comes only from the GPU ids Ray assigned (``ray.get_gpu_ids()``), mapped
through ``CUDA_VISIBLE_DEVICES``; a trial with none never touches CUDA. The budget of a trial
holding a fraction of a GPU is that fraction of its memory.
"""
from __future__ import annotations

import resource
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trainables.accounting import base_sizes, count_parameters
from trainables.batching import EncodedProblem
from trainables.config import TrialConfig
from trainables.families import family_spec
from trainables.memory import (
    Fit,
    MemoryEstimate,
    MemorySetup,
    ModelShape,
    ParamCounts,
    choose_fit,
    estimate_memory,
    lora_parts_of,
)
from trainables.methods import PeftSetup
from trainables.presets import ModelBundle


def device_for(gpu_ids: Sequence[int | str], cuda_visible_devices: str | None) -> str:
    """The torch device of a trial Ray assigned ``gpu_ids`` (``ray.get_gpu_ids()``).

    No ids: "cpu", whatever GPUs the machine has. Otherwise the position of the first id in
    ``CUDA_VISIBLE_DEVICES`` (Ray sets it to the assigned ids for actors that reserved GPUs;
    if it is unset, physical ids are the indices)."""
    if not gpu_ids:
        return "cpu"
    first = str(gpu_ids[0])
    if cuda_visible_devices is None or cuda_visible_devices == "":
        return f"cuda:{int(first)}"
    visible = [v.strip() for v in cuda_visible_devices.split(",")]
    if first not in visible:
        raise RuntimeError(f"Ray assigned GPU {first} but CUDA_VISIBLE_DEVICES={cuda_visible_devices!r} "
                           "does not include it")
    return f"cuda:{visible.index(first)}"


def memory_budget(device: torch.device, gpu_fraction: float) -> int | None:
    """Bytes of the GPU this trial may use (its Ray fraction of the device); None on CPU."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(device).total_memory * min(1.0, gpu_fraction))


@dataclass(frozen=True)
class RunSettings:
    """The batch sizes and checkpointing a trial runs with (effective batch = the config's)."""

    batch_size: int
    grad_accum: int
    eval_batch_size: int
    activation_checkpointing: bool
    estimate: MemoryEstimate
    """Planned peak on this device at these settings."""

    def metrics(self) -> dict[str, float]:
        """First-report metrics: what actually ran, next to what the config asked."""
        return {"micro_batch_size": self.batch_size, "grad_accum_steps": self.grad_accum,
                "eval_batch_size_used": self.eval_batch_size,
                "activation_checkpointing_on": int(self.activation_checkpointing),
                "est_peak_memory_gib": self.estimate.peak_bytes / 2**30}


def memory_setup(cfg: TrialConfig, bundle: ModelBundle, splits: dict[str, list[EncodedProblem]],
                 device: torch.device, compute_16bit: bool, vit_resident: bool = True) -> MemorySetup:
    """The trial's MemorySetup at the config's batch sizes, token lengths from its own data."""
    problems = [p for split in splits.values() for p in split]
    specials = 1  # T5: </s> after the prompt; LLaMA: BOS before it
    return MemorySetup(
        device=device.type, weight_dtype=cfg.weight_dtype, compute_16bit=compute_16bit,
        batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
        activation_checkpointing=cfg.activation_checkpointing == "on",
        prompt_tokens=max(len(p.prefix_ids) for p in problems) - bundle.num_query_tokens - specials,
        answer_tokens=max(len(c) for p in problems for c in p.candidate_ids),
        qformer_text_tokens=max(len(p.qformer_ids) for p in problems),
        candidates=max(len(p.candidate_ids) for p in problems), vit_resident=vit_resident)


def param_counts(peft: PeftSetup, family: str, model: nn.Module) -> ParamCounts:
    """The memory model's counts for ``model`` (plain, peft-wrapped or on the meta device)."""
    rep = count_parameters(model, peft, family_spec(family))
    vit = sum(v for n, v in base_sizes(model).items() if n.startswith("vision_model."))
    return ParamCounts(total=rep.total, trainable=rep.trainable,
                       lora=rep.lora_params_qformer + rep.lora_params_llm, vit=vit,
                       qformer_trained=peft.spec.trains_full_qformer, qformer=rep.qformer_total,
                       lora_parts=lora_parts_of(peft))


def resolve_settings(cfg: TrialConfig, shape: ModelShape, counts: ParamCounts, setup: MemorySetup,
                     budget: int | None) -> RunSettings:
    """The config's settings, or under ``activation_checkpointing="auto"`` with a GPU budget the
    first that fits it (trainables.memory.choose_fit); nothing fitting: the most frugal one, with
    a warning (the estimate may be pessimistic; an out-of-memory error is the real arbiter)."""
    if cfg.activation_checkpointing == "auto" and budget is not None:
        fit = choose_fit(shape, counts, setup, budget, cfg.effective_batch)
        if fit is None:
            frugal = MemorySetup(**{**vars(setup), "batch_size": 1, "eval_batch_size": 1,
                                    "activation_checkpointing": True})
            est = estimate_memory(shape, counts, frugal)
            warnings.warn(f"{cfg.cell_id}: even micro-batch 1 with activation checkpointing is "
                          f"estimated at {est.peak_bytes / 2**30:.1f} GiB > this GPU share "
                          f"{budget / 2**30:.1f} GiB; trying it anyway", stacklevel=2)
            fit = Fit(1, cfg.effective_batch, 1, True, est)
        return RunSettings(fit.batch_size, fit.grad_accum, fit.eval_batch_size,
                           fit.activation_checkpointing, fit.estimate)
    return RunSettings(cfg.batch_size, cfg.grad_accum, cfg.eval_batch_size,
                       cfg.activation_checkpointing == "on", estimate_memory(shape, counts, setup))


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Measured peak: the CUDA allocator's reserved peak, or this process's peak RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_reserved(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)
