"""The Ray Tune function trainable: ``tune.Tuner(train_trial, param_space=...)``.

Why so thin: all logic lives in trainables.loop (usable without Ray); this wires its ``report``
callback to ``ray.tune.report`` with an adapter-only checkpoint attached every epoch, and
resumes from ``ray.tune.get_checkpoint()`` when Ray restarts the trial (failure, PBT, restore).
The flat config dict is parsed once into a TrialConfig, so a bad key fails before any training.
Device: the GPU Ray assigned to the trial (trainables.runsetup.device_for), else CPU: a trial
that reserved no GPU never initialises CUDA, although Ray 2.60 leaves GPUs visible to it. Its
memory budget is its share of that GPU (a fractional --gpus-per-trial gets that fraction), and
it runs inside that share (trainables.gpu_share: the allocator capped to it, everything freed
when the trial ends however it ends, so a reused actor keeps no dead trial's model on the GPU).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from trainables.config import TrialConfig
from trainables.gpu_share import assigned_gpu_share, gpu_share_scope
from trainables.loop import run_trial
from trainables.runsetup import device_for, memory_budget
from trainables.split_cache import SplitCache

SPLITS = SplitCache()
"""This process's encoded splits, kept from one trial to the next: Tune reuses the actor
(trainables.split_cache)."""


def train_trial(config: dict[str, Any]) -> None:
    """Run one trial inside Ray Tune (reports each epoch; never raises on divergence)."""
    from ray import tune  # imported here so that importing this module never starts Ray

    cfg = TrialConfig.from_dict(dict(config))

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    device, budget = assigned_device()
    restored = tune.get_checkpoint()
    with gpu_share_scope(device, assigned_gpu_share()):
        if restored is None:
            run_trial(cfg, report=report, device=device, memory_budget=budget, split_cache=SPLITS)
            return
        with restored.as_directory() as path:
            run_trial(cfg, report=report, resume_from=Path(path), device=device, memory_budget=budget,
                      split_cache=SPLITS)


def assigned_device() -> tuple[torch.device, int | None]:
    """(device, memory budget in bytes) of this Ray worker: only what Ray assigned it."""
    import ray
    device = torch.device(device_for(ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")))
    if device.type != "cuda":
        return device, None
    torch.cuda.set_device(device)  # libraries that use "the current device" use this one
    fraction = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 1.0))
    return device, memory_budget(device, fraction)
