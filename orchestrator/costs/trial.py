"""What each trial, and the whole sweep, cost: GPU-/CPU-seconds, throughput, MFU and dollars.

Why on the driver: Ray already tells the driver each trial's reserved resources (its
placement group bundle) and wall time, and every epoch's ``samples_per_s``; the planner knows
the training FLOPs of one example. So no trial code is involved, a resumed sweep keeps its
numbers (they live in MLflow), and the same rule holds on CPU-only sweeps.

Per trial (MLflow child-run metrics, logged when the trial ends):
  gpu_seconds   = GPU share reserved x wall time (a trial sharing a GPU pays for its share)
  cpu_seconds   = CPUs reserved x wall time
  cost_usd      = gpu_seconds x (node price / GPUs per node) on a GPU node,
                  cpu_seconds x (node price / CPUs per node) on a CPU-only node;
                  only when the node type and its price are known (cluster config, --price)
  train_samples_per_s = mean of the epochs' training throughput
  mfu           = planned training FLOPs per example x train_samples_per_s / the GPU's dense
                  bf16 peak (orchestrator.placement.hardware); a GPU-known trial only. Relative to the
                  whole GPU, so the MFUs of trials packed on one GPU add up to that GPU's.
Wall time is Tune's ``time_total_s`` (summed over restores; time lost to a crash between two
checkpoints is not counted).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.placement.node_types import NodeType


@dataclass(frozen=True)
class TrialCost:
    """The cost of one trial (see the module docstring for each field's rule)."""

    gpu_share: float
    cpus: float
    wall_s: float
    gpu_seconds: float
    cpu_seconds: float
    cost_usd: float | None
    train_samples_per_s: float | None
    mfu: float | None
    node_type: str | None

    def metrics(self) -> dict[str, float]:
        """MLflow metrics (None values left out; node_type is a tag; the wall time is logged
        as wall_time_s already)."""
        return {k: float(v) for k, v in asdict(self).items()
                if v is not None and k not in ("node_type", "cpus", "wall_s")}


@dataclass(frozen=True)
class CostBook:
    """What the driver knows to price trials: node types, where each cell was placed, and the
    planned training FLOPs per example of each cell (cell id -> value). Picklable (Tune pickles
    its callbacks)."""

    node_types: Mapping[str, NodeType]
    cell_node_type: Mapping[str, str]
    """cell id -> node type name (auto placement); cells absent use ``default_node_type``."""
    flops_per_example: Mapping[str, float]
    default_node_type: str | None = None
    """The node type of every trial not placed per cell: "local", or the one type of a
    single-type cluster; None when unknown (a cluster of several types and a fixed share)."""

    def node_type_of(self, cell: str) -> NodeType | None:
        name = self.cell_node_type.get(cell, self.default_node_type)
        return self.node_types.get(name) if name else None

    def trial_cost(self, cell: str, resources: Mapping[str, float], wall_s: float,
                   samples_per_s: float | None) -> TrialCost:
        """Price one finished (or stopped, or failed) trial."""
        share, cpus = float(resources.get("GPU", 0.0)), float(resources.get("CPU", 0.0))
        node = self.node_type_of(cell)
        gpu_s, cpu_s = share * wall_s, cpus * wall_s
        usd = None
        if node is not None:
            rate = node.usd_per_gpu_second() if share > 0 else node.usd_per_cpu_second()
            usd = None if rate is None else rate * (gpu_s if share > 0 else cpu_s)
        mfu = None
        gpu = node.gpu if node is not None and share > 0 else None
        flops = self.flops_per_example.get(cell)
        if gpu is not None and gpu.bf16_flops and flops and samples_per_s:
            mfu = flops * samples_per_s / gpu.bf16_flops
        return TrialCost(gpu_share=share, cpus=cpus, wall_s=wall_s, gpu_seconds=gpu_s,
                         cpu_seconds=cpu_s, cost_usd=usd, train_samples_per_s=samples_per_s,
                         mfu=mfu, node_type=node.name if node else None)


def bundle_resources(trial: Any) -> dict[str, float]:
    """The resources Ray reserved for a Tune trial (the sum over its placement group bundles)."""
    total: dict[str, float] = {}
    factory = getattr(trial, "placement_group_factory", None)
    for bundle in factory.bundles if factory is not None else ():
        for key, value in bundle.items():
            total[key] = total.get(key, 0.0) + float(value)
    return total


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
