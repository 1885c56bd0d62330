"""The GPUs placement knows: Ray's name for each, its memory (the planner's), its dense bf16 peak.

Why a table in the repo: placement needs each GPU's memory before any node exists (an
autoscaling cluster starts with no GPU node), and MFU needs a peak to divide by. Names are
Ray's accelerator types (``ray.util.accelerators``), so a node type declares its GPU with the
resource Ray itself uses, ``accelerator_type:<NAME>``. Ray tags every A100 node plain "A100";
the two sizes differ in memory, so node types name them "A100-40G" / "A100-80G" explicitly
(Ray's own constants for exactly this).

Memory: the planner's table (trainables.memory.GPU_TYPES: what PyTorch sees as the device's
total), so placement and the trials' own fitting use one number per GPU.
Peaks: NVIDIA datasheets, dense (no 2:4 sparsity), bf16 tensor ops with fp32 accumulate. AWS
publishes no tensor peak for its A10G; the A10's (same GA102 chip class) stands in for it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from trainables.memory import GPU_TYPES


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model: what placement and MFU need to know about it."""

    name: str
    """Ray accelerator type, e.g. "A10G", "A100-80G" (resource ``accelerator_type:<name>``)."""
    memory_bytes: int
    """Device memory PyTorch sees (trainables.memory.GPU_TYPES)."""
    bf16_flops: float
    """Dense bf16 tensor-core peak, FLOP/s."""
    planner_name: str = ""
    """The planner's name for it (trainables.memory.GPU_TYPES, orchestrator.driver.plan fits)."""

    @property
    def resource(self) -> str:
        """The Ray custom resource a node with this GPU declares (value 1) and a trial asks for."""
        return f"accelerator_type:{self.name}"

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30


def _spec(name: str, planner_name: str, bf16_flops: float) -> GpuSpec:
    return GpuSpec(name, GPU_TYPES[planner_name], bf16_flops, planner_name)


GPUS: dict[str, GpuSpec] = {g.name: g for g in (
    _spec("A10G", "A10G-24GB", 125e12),          # AWS g5; 24 GB GDDR6
    _spec("A100-40G", "A100-40GB", 312e12),      # AWS p4d, GCP a2; SXM4 40 GB
    _spec("A100-80G", "A100-80GB", 312e12),      # AWS p4de, GCP a2-ultra; SXM4 80 GB
    _spec("H100", "H100-80GB", 989e12),          # AWS p5; SXM5 80 GB HBM3
    _spec("H200", "H200-141GB", 989e12),         # AWS p5e/p5en; SXM 141 GB HBM3e
)}
"""Every GPU placement can plan for, by Ray accelerator type."""


def gpu_spec(name: str) -> GpuSpec:
    """The table's entry for ``name``; unknown names fail naming the known ones."""
    try:
        return GPUS[name]
    except KeyError:
        hint = " (say A100-40G or A100-80G: the sizes differ in memory)" if name == "A100" else ""
        raise ValueError(f"unknown GPU type {name!r}{hint}; known: {', '.join(GPUS)} "
                         f"(orchestrator/placement/hardware.py)") from None


def gpu_from_device_name(device_name: str, memory_bytes: int) -> GpuSpec:
    """The table's entry for a local CUDA device (``torch.cuda.get_device_properties``).

    Matched by the model token of the device name ("NVIDIA A100-SXM4-80GB" -> A100 -> sized by
    its memory); a GPU the table lacks still gets a spec with its real memory and no peak (MFU
    is then not reported).
    """
    tokens = set(re.split(r"[\s-]+", device_name.upper()))
    if "A100" in tokens:
        return GPUS["A100-80G" if memory_bytes > 60 * 2**30 else "A100-40G"]
    for name in GPUS:
        if name in tokens:
            return GPUS[name]
    return GpuSpec(device_name, memory_bytes, 0.0)
