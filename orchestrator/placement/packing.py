"""Memory-aware placement: which node type each trial runs on and what share of a GPU it asks for.

Why: the grid's trials differ ~4x in planned GPU memory and clusters mix 24 GB and 80 GB GPUs.
One hand-picked ``--gpus-per-trial`` either lets big trials OOM (a fraction that packs small
ones) or wastes most of a large GPU (1 per trial). Here every trial asks Ray for

    {"GPU": share, "accelerator_type:<its GPU>": 0.001, "CPU": cpus}

where ``share`` is its planned peak over the usable memory of that GPU, rounded UP to
SHARE_STEP. Ray gives a fractional GPU request a single GPU and never lets the requests on one
GPU sum above 1 (its per-GPU resource instances), so the planned peaks of the trials sharing a
GPU always sum below (1 - MEMORY_MARGIN) of its memory. The accelerator resource, declared with
value 1 by every node of the type (cluster.yaml), pins the trial to that type.

MEMORY_MARGIN: the planner's own headroom (trainables.memory.FIT_HEADROOM, 5%) of every GPU
stays unplanned. The planned peaks already count each trial's CUDA context and the caching
allocator's fragmentation; the margin is for the estimate's own error, and it is the same one a
trial applies when it fits its setting to its share at start, so the two always agree. Each
trial also caps its own allocator to its share (trainables.gpu_share), so a spike fails that
trial, not its neighbours.

Which node type: every type whose GPU holds the trial at its planned peak is a candidate (only
when there is none, the types that hold it in its fallback setting: activation checkpointing,
orchestrator.placement.demand). Trials are taken largest
first (the ones with fewest candidates first) and each goes to the candidate pool that would
finish earliest with it -- pool load = planned GPU-seconds / the pool's GPUs (longest
processing time first, the classic makespan heuristic); ties go to the cheaper GPU-hour. So
big trials land where only they fit and small ones spread over whatever capacity is left.

A trial that fits no node type is refused before Ray starts (PlacementError names the trial,
its estimate and the largest GPU).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.placement.hardware import GpuSpec
from orchestrator.placement.node_types import NodeType
from trainables.memory import FIT_HEADROOM

MEMORY_MARGIN = FIT_HEADROOM
"""Fraction of each GPU's memory no trial's plan may use (see the module docstring)."""
SHARE_STEP = 0.01
"""GPU shares are rounded up to this step (Ray resolves fractions to 1e-4)."""
PIN_AMOUNT = 0.001
"""How much of a node's accelerator_type:<GPU> resource (1 per node) a trial takes: enough
to pin it to the type, small enough that it never limits how many trials share a node."""


class PlacementError(ValueError):
    """Trials that cannot be placed; the message names trial, estimate and the largest GPU."""


@dataclass(frozen=True)
class Demand:
    """What placement needs to know about one trial."""

    key: str
    """The trial's identity (its cell id)."""
    peak_bytes: Mapping[str, int]
    """Planned peak GPU memory by GPU type name, on the types that hold the trial as planned."""
    gpu_seconds: Mapping[str, float] = field(default_factory=dict)
    """Planned whole-GPU compute seconds by GPU type (for balancing; absent: 1 s per share)."""
    fallback_peak_bytes: Mapping[str, int] = field(default_factory=dict)
    """Planned peak on GPU types that hold the trial only in a degraded setting (activation
    checkpointing, orchestrator.placement.demand): used only when no type in peak_bytes can."""
    planned_bytes: int = 0
    """The trial's planned peak as the refusal message quotes it (0: the largest of peak_bytes)."""

    @property
    def quoted_bytes(self) -> int:
        return self.planned_bytes or max([*self.peak_bytes.values(), 0])


@dataclass(frozen=True)
class Slot:
    """Where one trial runs: a node type and the share of one of its GPUs."""

    key: str
    node_type: str
    gpu: GpuSpec | None
    share: float
    """Fraction of one GPU the trial reserves (0 on a CPU-only node)."""
    peak_bytes: int
    """Its planned peak on that GPU."""
    pinned: bool = True
    """Ask for the node type's accelerator resource (NodeType.pinned)."""
    fallback: bool = False
    """Placed in the degraded setting (Demand.fallback_peak_bytes): no type held it otherwise."""

    def resources(self, cpus: float) -> dict[str, float]:
        """The Ray resource request (a PlacementGroupFactory bundle) of this trial."""
        request = {"CPU": float(cpus), "GPU": self.share}
        if self.gpu is not None and self.pinned:
            request[self.gpu.resource] = PIN_AMOUNT
        return request


def gpu_share(peak_bytes: int, gpu: GpuSpec, margin: float = MEMORY_MARGIN) -> float | None:
    """The GPU share a trial of ``peak_bytes`` needs on ``gpu``; None when one GPU is too small."""
    usable = gpu.memory_bytes * (1 - margin)
    share = math.ceil(peak_bytes / usable / SHARE_STEP - 1e-9) * SHARE_STEP
    return round(share, 4) if share <= 1 else None


def _largest_gpu(types: Sequence[NodeType]) -> GpuSpec | None:
    gpus = [t.gpu for t in types if t.gpu is not None]
    return max(gpus, key=lambda g: g.memory_bytes) if gpus else None


def _refusal(unplaced: list[Demand], types: Sequence[NodeType], margin: float) -> PlacementError:
    """One line: how many, the largest GPU, the first few trials with their estimates, the fix."""
    largest = _largest_gpu(types)
    where = (f"the largest GPU is {largest.name} ({largest.memory_gib:.1f} GiB, "
             f"{(1 - margin) * largest.memory_gib:.1f} GiB usable with the {margin:.0%} "
             f"margin)") if largest else ("no node type has a GPU (--address / --cluster-config "
                                          "of a cluster with GPUs, or --cpu to run on CPU)")
    named = "; ".join(f"{d.key}: planned peak {d.quoted_bytes / 2**30:.1f} GiB" for d in unplaced[:3])
    more = f"; and {len(unplaced) - 3} more" if len(unplaced) > 3 else ""
    return PlacementError(
        f"{len(unplaced)} trial(s) fit on no node type's GPU; {where}: {named}{more}. Add a node "
        f"type with a larger GPU (cluster config), shrink the trials (batch size, activation "
        f"checkpointing), or pass an explicit --gpus-per-trial. Nothing was started.")


def candidates(demand: Demand, types: Sequence[NodeType],
               margin: float) -> list[tuple[NodeType, float, int, bool]]:
    """(node type, share, planned peak, fallback) for every GPU node type whose GPU holds the
    trial as planned; only if there is none, those that hold it in its fallback setting."""
    for peaks, fallback in ((demand.peak_bytes, False), (demand.fallback_peak_bytes, True)):
        out = []
        for t in types:
            if t.gpu is None or not t.gpus or t.max_nodes < 1 or t.gpu.name not in peaks:
                continue
            share = gpu_share(peaks[t.gpu.name], t.gpu, margin)
            if share is not None:
                out.append((t, share, peaks[t.gpu.name], fallback))
        if out:
            return out
    return []


def place(demands: Sequence[Demand], types: Sequence[NodeType],
          margin: float = MEMORY_MARGIN) -> dict[str, Slot]:
    """A Slot per demand (key -> Slot), by the module docstring's rule; PlacementError if any
    trial fits no node type."""
    options = {d.key: candidates(d, types, margin) for d in demands}
    unplaced = [d for d in demands if not options[d.key]]
    if unplaced:
        raise _refusal(unplaced, types, margin)
    load = {t.name: 0.0 for t in types}
    pool = {t.name: t.gpus * t.max_nodes for t in types}
    order = sorted(demands, key=lambda d: (len(options[d.key]), -d.quoted_bytes, d.key))
    slots: dict[str, Slot] = {}
    for d in order:
        def finish(option: tuple[NodeType, float, int, bool], d: Demand = d) -> tuple[float, float, str]:
            """(when the pool would be done, price per GPU-second, name): the lowest wins."""
            t, share = option[0], option[1]
            work = d.gpu_seconds.get(t.gpu.name, share)
            return (load[t.name] + work) / pool[t.name], t.usd_per_gpu_second() or 0.0, t.name
        t, share, peak, fallback = min(options[d.key], key=finish)
        load[t.name] += d.gpu_seconds.get(t.gpu.name, share)
        slots[d.key] = Slot(d.key, t.name, t.gpu, share, peak, t.pinned, fallback)
    return slots


def first_fit(slots: Sequence[Slot], n_gpus: int) -> list[list[Slot]]:
    """Ray's fractional-GPU rule, one wave: each slot goes to the first GPU with enough share
    left (shares on a GPU never sum above 1). Returns the GPUs' contents; slots that find no
    room wait for the next wave (not returned). Used to check and show packing."""
    gpus: list[list[Slot]] = [[] for _ in range(n_gpus)]
    free = [1.0] * n_gpus
    for slot in sorted(slots, key=lambda s: -s.share):
        for i in range(n_gpus):
            if slot.share <= free[i] + 1e-9:
                gpus[i].append(slot)
                free[i] -= slot.share
                break
    return gpus
