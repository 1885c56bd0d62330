"""The Ray Tune function trainable: ``tune.Tuner(train_trial, param_space=...)``.

Why so thin: all logic lives in trainables.loop (usable without Ray); this wires its ``report``
callback to ``ray.tune.report`` with an adapter-only checkpoint attached every epoch, and
resumes from ``ray.tune.get_checkpoint()`` when Ray restarts the trial (failure, PBT, restore).
The flat config dict is parsed once into a TrialConfig, so a bad key fails before any training.
Device: the first CUDA device Ray assigned to the trial, else CPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainables.config import TrialConfig
from trainables.loop import run_trial


def train_trial(config: dict[str, Any]) -> None:
    """Run one trial inside Ray Tune (reports each epoch; never raises on divergence)."""
    from ray import tune  # imported here so that importing this module never starts Ray

    cfg = TrialConfig.from_dict(dict(config))

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    restored = tune.get_checkpoint()
    if restored is None:
        run_trial(cfg, report=report, device=device)
        return
    with restored.as_directory() as path:
        run_trial(cfg, report=report, resume_from=Path(path), device=device)
