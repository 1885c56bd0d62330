"""What a planned trial asks of each GPU type: its planned peak there, from the planner's memory model.

Why a rule of its own: the planner (orchestrator.driver.plan, trainables.memory) knows many
settings of one trial -- the recipe's micro-batch, smaller ones at the same effective batch,
activation checkpointing -- and each has its own peak. Placement plans every trial at its
*packing setting*: the smallest micro-batch the memory model tries without checkpointing
(trainables.memory.plain_micro_batches: down to 4, effective batch kept). Several such trials
share a large GPU and together keep it as busy as one trial at the recipe's micro-batch, while
none pays checkpointing's ~1/3 extra compute. A GPU type too small even for that is a
*fallback*: there the trial needs checkpointing (the planner's fit for that GPU), and placement
uses it only when no node type holds the trial without.

A trial given a share of a GPU fits its own setting to that share when it starts
(trainables.runsetup.resolve_settings, the same memory model): it finds the packing setting or a
larger one that still fits, never more than its share.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from orchestrator.placement.hardware import GPUS
from orchestrator.placement.packing import MEMORY_MARGIN, Demand, gpu_share
from trainables.memory import estimate_memory, plain_micro_batches


def packing_peak(memory_inputs: tuple[Any, Any, Any], effective_batch: int) -> int:
    """Planned peak bytes at the packing setting (module docstring)."""
    shape, counts, setup = memory_inputs
    batch = plain_micro_batches(setup, effective_batch)[-1]
    packed = replace(setup, batch_size=batch, activation_checkpointing=False)
    return estimate_memory(shape, counts, packed).peak_bytes


def demand_of(trial: Any, key: str, effective_batch: int, flops: float,
              margin: float = MEMORY_MARGIN) -> Demand:
    """The Demand of one PlannedTrial (``flops``: its planned training FLOPs, for balancing)."""
    if trial.memory_inputs is None:
        raise ValueError(f"{key}: the plan has no memory model inputs to place it by")
    plain = packing_peak(trial.memory_inputs, effective_batch)
    peaks, fallback = {}, {}
    for gpu in GPUS.values():
        fit = trial.fits.get(gpu.planner_name)
        if gpu_share(plain, gpu, margin) is not None:
            peaks[gpu.name] = plain
        elif fit is not None:
            fallback[gpu.name] = int(fit["peak_bytes"])
    return Demand(key, peaks, {g.name: flops / g.bf16_flops for g in GPUS.values()}, fallback, plain)
