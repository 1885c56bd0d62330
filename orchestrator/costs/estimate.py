"""--dry-run's bill: GPU-hours, dollars and makespan of a whole space before renting anything.

Model (an estimate; the sweep's own accounting, orchestrator.costs.trial, measures the real thing):
  GPU-seconds of a trial on GPU g = epochs x planned FLOPs per epoch (orchestrator.driver.plan)
                                    / (g's dense bf16 peak x PLANNING_MFU)
  i.e. compute-bound: a trial sharing a GPU runs proportionally slower, so its GPU-seconds
  (share x wall time) stay the same. Dollars = GPU-seconds x the node type's price per
  GPU-second. Makespan on N GPUs: longest-processing-time-first list scheduling of the
  trials' GPU-seconds over N GPUs (sharing a GPU does not change when its work is done).
  Full budget = every trial runs every epoch (FIFO, no early stopping): an upper bound.
  ASHA line: the expected fraction of those epochs when each rung keeps 1/reduction_factor of
  the trials reaching it (rungs at grace x rf^(k+b) below the budget in bracket b, brackets
  weighted as Ray draws trials into them).
PLANNING_MFU is an assumption (no GPU measured it here); child runs log the measured ``mfu``
to replace it with.
"""
from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.placement.hardware import GpuSpec
from orchestrator.placement.node_types import MARKETS, NodeType
from orchestrator.placement.packing import MEMORY_MARGIN, Demand, place
from trainables.defaults import AshaSettings

PLANNING_MFU = 0.30
"""Assumed model FLOPs utilisation of a training step (bf16, LoRA, small micro-batches)."""
RECOMPUTE_FACTOR = 4 / 3
"""Compute of a trial run with activation checkpointing (one more forward per forward+backward)."""


@dataclass(frozen=True)
class PlannedWork:
    """One trial of the space as the estimate sees it."""

    demand: Demand
    flops: float
    """Planned training FLOPs of the whole trial (epochs x FLOPs per epoch)."""
    flops_per_example: float
    """Planned training FLOPs of one example (forward + backward), for MFU."""

    def gpu_seconds(self, gpu: GpuSpec, checkpointing: bool = False) -> float:
        recompute = RECOMPUTE_FACTOR if checkpointing else 1.0
        return recompute * self.flops / (gpu.bf16_flops * PLANNING_MFU)

    def fits(self, gpu: GpuSpec) -> str | None:
        """"plain" (as planned), "ck" (only with activation checkpointing) or None."""
        if gpu.name in self.demand.peak_bytes:
            return "plain"
        return "ck" if gpu.name in self.demand.fallback_peak_bytes else None


def makespan(seconds: Sequence[float], n_gpus: int) -> float:
    """LPT list scheduling of jobs over n_gpus machines: when the last one finishes."""
    loads = [0.0] * max(1, n_gpus)
    heapq.heapify(loads)
    for s in sorted(seconds, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + s)
    return max(loads)


def asha_fraction(settings: AshaSettings) -> float:
    """Expected share of a full budget's trial-epochs that ASHA runs (module docstring): per
    bracket, everyone runs to its first rung and 1/reduction_factor of those reaching a rung run
    on to the next (the last rung's survivors to max_t); brackets weighted as trials are drawn
    into them (AshaSettings.bracket_weights)."""
    share = 0.0
    for weight, bracket in zip(settings.bracket_weights(), range(settings.brackets)):
        rungs = [m for m in settings.milestones(bracket) if m < settings.max_t]
        survivors, done, ran = 1.0, 0, 0.0
        for rung in rungs:
            ran += survivors * (rung - done)
            done, survivors = rung, survivors / settings.reduction_factor
        share += weight * (ran + survivors * (settings.max_t - done)) / settings.max_t
    return share


def _row(name: str, gpu: GpuSpec, market: str, rate: float | None, work: Sequence[PlannedWork],
         n_gpus: int) -> str:
    kinds = [w.fits(gpu) for w in work]
    secs = [w.gpu_seconds(gpu, k == "ck") for w, k in zip(work, kinds, strict=True) if k]
    hours = sum(secs) / 3600
    usd = "-" if rate is None else f"{hours * rate:,.0f}"
    price = "-" if rate is None else f"{rate:.3f}"
    fit = f"{kinds.count('plain')}+{kinds.count('ck')}/{len(work)}"
    return (f"{name:<12}{gpu.name:<10}{market:<10}{price:>8} {fit:>11}"
            f"{hours:>9,.1f}{usd:>10}{makespan(secs, n_gpus) / 3600:>12,.1f}")


def format_cost_plan(work: Sequence[PlannedWork], types: Sequence[NodeType], n_gpus: int,
                     asha: float | None, only: str | None = None) -> str:
    """The dry-run's cost block: one line per GPU node type and market with a price, then the
    auto placement over all of them."""
    header = (f"{'node type':<12}{'GPU':<10}{'market':<10}{'$/GPU-h':>8} {'fit+ck':>11}"
              f"{'GPU-h':>9}{'$':>10}{f'span {n_gpus} GPU':>12}")
    lines = [f"cost estimate, full epoch budget of all {len(work)} trials at {PLANNING_MFU:.0%} MFU "
             f"(orchestrator/costs/estimate.py). fit+ck: trials one GPU holds at their packing "
             f"setting with the {MEMORY_MARGIN:.0%} margin + those it holds only with activation "
             f"checkpointing (x{RECOMPUTE_FACTOR:.2f} compute); GPU-h, $ and makespan (h) of those:",
             header, "-" * len(header)]
    for t in types:
        if t.gpu is None or (only and t.name != only):
            continue
        markets = [m for m in MARKETS if t.price(m) is not None] or [t.market]
        for market in markets:
            rate = t.usd_per_gpu_second(market)
            lines.append(_row(t.name, t.gpu, market, None if rate is None else rate * 3600, work,
                              n_gpus))
    lines.append(_auto_line(work, [t for t in types if not only or t.name == only]))
    if asha is not None:
        lines.append(f"with ASHA (defaults): about {asha:.0%} of these trial-epochs run, so "
                     f"GPU-hours and dollars scale by ~{asha:.2f}")
    return "\n".join(lines)


def _auto_line(work: Sequence[PlannedWork], types: Sequence[NodeType]) -> str:
    """Where --gpus-per-trial auto would put every trial, and what that costs."""
    from orchestrator.placement.packing import PlacementError
    by_name = {t.name: t for t in types}
    try:
        slots = place([w.demand for w in work], types)
    except PlacementError as err:
        return f"auto placement: impossible on these node types: {str(err).splitlines()[0]}"
    hours, usd, counts = 0.0, 0.0, {}
    for w in work:
        slot = slots[w.demand.key]
        t = by_name[slot.node_type]
        secs = w.gpu_seconds(t.gpu, slot.fallback)
        hours += secs / 3600
        rate = t.usd_per_gpu_second()
        usd = None if usd is None or rate is None else usd + secs * rate
        counts[t.name] = counts.get(t.name, 0) + 1
    spread = ", ".join(f"{n} on {k}" for k, n in counts.items())
    cost = "price unknown" if usd is None else f"${usd:,.0f}"
    return f"auto placement ({spread}; each in its node type's market): {hours:,.1f} GPU-h, {cost}"


def work_from_plan(planned: Sequence[Any], keys: Sequence[str], epochs: Sequence[int],
                   effective_batches: Sequence[int]) -> list[PlannedWork]:
    """PlannedWork per PlannedTrial (orchestrator.driver.plan), keyed by ``keys``, with its
    placement demand (orchestrator.placement.demand)."""
    from orchestrator.driver.plan import TRAIN_PROBLEMS
    from orchestrator.placement.demand import demand_of
    work = []
    for trial, key, n_epochs, effective in zip(planned, keys, epochs, effective_batches, strict=True):
        flops = float(n_epochs * trial.est_train_flops_per_epoch)
        per_example = trial.est_train_flops_per_epoch / TRAIN_PROBLEMS[trial.benchmark]
        work.append(PlannedWork(demand_of(trial, key, effective, flops), flops, per_example))
    return work


def dry_run_block(planned: Sequence[Any], space: Any, types: Sequence[NodeType], options: Any) -> str:
    """The dry-run's cost block for the plan of ``space`` (SweepOptions: epochs, scheduler,
    grace_period, reduction_factor, brackets, rung_metric, node_type, makespan_gpus). The ASHA
    settings are the planned presets' (their recipes' epoch budgets), not the toy stand-ins'."""
    from orchestrator.driver.schedulers import asha_settings
    from trainables.defaults import recipe_for
    recipes = [recipe_for(t.llm) for t in planned]
    epochs = [options.epochs or space.overrides.get("epochs") or r.epochs for r in recipes]
    effective = [r.batch_size * r.grad_accum for r in recipes]
    work = work_from_plan(planned, [c.id for c in space.cells], epochs, effective)
    fraction = None
    if options.scheduler == "asha" and planned:
        budget, longest = max(zip(epochs, (t.llm for t in planned), strict=True))
        asha = asha_settings(budget, longest, grace_period=options.grace_period,
                             reduction_factor=options.reduction_factor, brackets=options.brackets,
                             metric=options.rung_metric)
        fraction = asha_fraction(asha)
    return format_cost_plan(work, types, options.makespan_gpus, fraction, options.node_type)
