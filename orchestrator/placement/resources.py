"""What each trial of a sweep asks Ray for, and what the driver needs to price it afterwards.

Why one place: ``--gpus-per-trial auto|N``, the node types (cluster config or this machine),
the memory plan and the cost book must agree for the grid, its retunes and a resumed sweep.

``--gpus-per-trial`` (sweep CLI):
  auto  every real-size trial gets the GPU share and node type its planned peak memory needs
        (orchestrator.placement.packing); the default when any trial runs a real preset. Trials of
        toy presets (no plan) run on CPU. Refused before Ray starts when a trial fits no GPU.
  N     every trial asks for N GPUs (0: CPU only; 0.25: four per GPU), as given.
Node types: --cluster-config FILE (a Ray launcher YAML, orchestrator.placement.node_types), else on a
launched cluster's head the launcher's own copy (~/ray_bootstrap_config.yaml), else this
machine ("local"; a remote --address without either is refused for auto).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from orchestrator.costs.estimate import PlannedWork, work_from_plan
from orchestrator.costs.trial import CostBook
from orchestrator.driver.spaces import Space
from orchestrator.placement.node_types import (
    NodeType,
    NodeTypeError,
    load_node_types,
    local_node_type,
    override_prices,
)
from orchestrator.placement.packing import Slot, place
from trainables.config import TrialConfig
from trainables.vocab import REAL_PRESETS

AUTO = "auto"
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
"""Where `ray up` leaves the cluster config on the head node (what `ray job submit` runs on)."""
REPO_CLUSTER_CONFIG = Path(__file__).resolve().parents[2] / "cluster.yaml"
"""The shipped AWS cluster: the dry-run prices a space on its node types by default."""


class ResourceError(ValueError):
    """Resources a sweep cannot run with; the message names the option and the fix."""


@dataclass(frozen=True)
class TrialResources:
    """The ``tune.with_resources`` callable: trial config -> its Ray resource bundle.

    Fixed (``slots`` empty): every trial asks for ``gpus``. Auto: the trial's cell's Slot;
    a cell without one (a toy preset) runs on CPU.
    """

    cpus: float
    gpus: float = 0.0
    slots: Mapping[str, Slot] = field(default_factory=dict)

    def request(self, config: Mapping[str, Any]) -> dict[str, float]:
        if not self.slots:
            return {"CPU": self.cpus, "GPU": self.gpus}
        slot = self.slots.get(cell_of(config))
        return slot.resources(self.cpus) if slot else {"CPU": self.cpus, "GPU": 0.0}

    def __call__(self, config: dict[str, Any]) -> Any:
        from ray.tune import PlacementGroupFactory
        return PlacementGroupFactory([self.request(config)])

    def largest_gpu_request(self) -> float:
        """The largest GPU share any trial asks for (what one node must hold)."""
        if not self.slots:
            return self.gpus
        return max((s.share for s in self.slots.values()), default=0.0)

    def smallest_gpu_request(self) -> float:
        """The smallest non-zero GPU share any trial asks for (0: none asks for a GPU)."""
        shares = [s.share for s in self.slots.values() if s.share > 0] if self.slots \
            else [self.gpus]
        return min((s for s in shares if s > 0), default=0.0)


def cell_of(config: Mapping[str, Any]) -> str:
    """The cell id of a trial config (grid configs carry orchestration keys: left out)."""
    known = {f.name for f in fields(TrialConfig)}
    return TrialConfig.from_dict({k: v for k, v in config.items() if k in known}).cell_id


def planned_work(space: Space, trials: Sequence[TrialConfig], options: Any) -> list[PlannedWork]:
    """The memory/FLOPs plan of every real-size trial of a sweep, as the dry run makes it
    (orchestrator.driver.prepare.planned_trials), keyed by the trial's cell id; cells of toy presets
    are left out."""
    from orchestrator.driver.prepare import planned_trials
    real = [(cell, t) for cell, t in zip(space.cells, trials, strict=True) if t.llm in REAL_PRESETS]
    if not real:
        return []
    cells = [replace(cell, llm=t.llm) for cell, t in real]
    planned, _ = planned_trials(Space(space.name, cells, space.overrides), options)
    return work_from_plan(planned, [t.cell_id for _, t in real], [t.epochs for _, t in real],
                          [t.effective_batch for _, t in real])


def node_types_for(cluster_config: str | None, address: str | None,
                   prices: Mapping[str, float], strict: bool = True) -> list[NodeType]:
    """The node types trials can land on (module docstring), prices overridden by --price.
    ``strict=False``: an unreadable launcher copy found on the head (not asked for by
    --cluster-config) only costs the dollars of a fixed-share sweep, with a warning."""
    bootstrap = Path(BOOTSTRAP_CONFIG).expanduser()
    if cluster_config is not None:
        types = load_node_types(cluster_config)
    elif address and bootstrap.exists():
        try:
            types = load_node_types(bootstrap)
        except NodeTypeError as err:
            if strict:
                raise
            print(f"warning: {err}; trial costs will have no dollars")
            types = []
    elif address:
        types = []
    else:
        types = [local_node_type(prices.get("local"))]
    return override_prices(types, {k: v for k, v in prices.items()
                                   if not (k == "local" and types and types[0].name == "local")})


def resolve(work: Sequence[PlannedWork], gpus_per_trial: str | float | None, cpus: float,
            types: Sequence[NodeType], address: str | None) -> tuple[TrialResources, CostBook]:
    """The sweep's TrialResources and CostBook from the plan of its real-size trials (``work``);
    ResourceError/PlacementError before Ray starts if impossible."""
    mode = gpus_per_trial if gpus_per_trial is not None else (AUTO if work else 0.0)
    by_name = {t.name: t for t in types}
    default = types[0].name if len(types) == 1 else None
    flops = {w.demand.key: w.flops_per_example for w in work}
    if mode != AUTO:
        return TrialResources(cpus=cpus, gpus=float(mode)), CostBook(by_name, {}, flops, default)
    if not types:
        raise ResourceError(f"--gpus-per-trial auto on the cluster at {address}: no node types "
                            f"known; pass --cluster-config (the cluster's launcher YAML) or an "
                            f"explicit --gpus-per-trial")
    slots = place([w.demand for w in work], types) if work else {}
    book = CostBook(by_name, {k: s.node_type for k, s in slots.items()}, flops, default)
    return TrialResources(cpus=cpus, slots=slots), book


def for_sweep(prepared: Any, options: Any) -> tuple[TrialResources, CostBook]:
    """The sweep's resources (SweepOptions: gpus_per_trial/cpu, cpus_per_trial, cluster_config,
    price, address); ResourceError/PlacementError/NodeTypeError before Ray starts."""
    from orchestrator.driver.cluster import resolve_address
    from orchestrator.placement.node_types import parse_price
    address = resolve_address(options.address)
    prices = dict(parse_price(p) for p in options.price)
    gpus = options.requested_gpus
    auto = gpus == AUTO or (gpus is None and any(t.llm in REAL_PRESETS for t in prepared.trials))
    types = node_types_for(options.cluster_config, address, prices, strict=auto)
    work = planned_work(prepared.space, prepared.trials, options)
    return resolve(work, gpus, options.cpus_per_trial, types, address)


def dry_run_node_types(options: Any) -> list[NodeType]:
    """The node types the dry-run prices the space on: --cluster-config, else the shipped
    cluster.yaml, plus this machine when it has a GPU."""
    from orchestrator.placement.node_types import parse_price
    prices = dict(parse_price(p) for p in options.price)
    types = load_node_types(options.cluster_config or REPO_CLUSTER_CONFIG)
    local = local_node_type(prices.pop("local", None))
    if local.gpu is not None and options.cluster_config is None:
        types.append(local)
    return override_prices(types, prices)
