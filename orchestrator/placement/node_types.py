"""The node types a sweep can place trials on, and what an hour of each costs.

Why read them from the Ray cluster launcher YAML: placement must happen before Ray starts (an
autoscaling cluster has no GPU node yet), and cluster.yaml already says which instance types
exist, how many GPUs/CPUs each has (``resources``), whether it is spot, and which GPU it
carries (``accelerator_type:<NAME>``, orchestrator.placement.hardware). Prices are not Ray's business:
they live under the top-level ``metadata`` key, which Ray stores and never interprets::

    metadata:
      instructblip_peft:
        prices_usd_per_hour:            # per instance type, per market
          g5.2xlarge: {on_demand: 1.212, spot: 0.45}
        node_types:                     # only for on-prem (provider: local) clusters, whose
          gpu_box: {gpu: A10G, gpus: 1, cpus: 8, nodes: 2, usd_per_hour: 0.0}  # nodes Ray
                                        # cannot describe; each node starts with
                                        # --resources '{"accelerator_type:A10G": 1}'

A local sweep (no cluster) has one node type, "local": this machine, its CUDA GPUs if any.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.placement.hardware import GPUS, GpuSpec, gpu_from_device_name, gpu_spec

MARKETS = ("on_demand", "spot")
METADATA_KEY = "instructblip_peft"
METADATA_KEYS = ("prices_usd_per_hour", "node_types")
LOCAL_NODE_KEYS = ("gpu", "gpus", "cpus", "nodes", "usd_per_hour", "market")


class NodeTypeError(ValueError):
    """A cluster config or price option that placement/cost cannot use; names file and key."""


@dataclass(frozen=True)
class NodeType:
    """One kind of node trials can run on."""

    name: str
    """Node type name (cluster.yaml's available_node_types key; "local" for this machine)."""
    gpu: GpuSpec | None
    """Its GPU model, None for a CPU-only node."""
    gpus: int
    """GPUs per node."""
    cpus: float
    """CPUs per node (Ray's CPU resource)."""
    max_nodes: int
    """How many such nodes the cluster may have at once (max_workers)."""
    instance_type: str | None = None
    market: str = "on_demand"
    """The market nodes of this type are bought in ("spot" when the YAML asks for spot)."""
    usd_per_hour: Mapping[str, float] = field(default_factory=dict)
    """Price of one node-hour by market; empty when unknown (then no dollars are reported)."""
    pinned: bool = True
    """Trials ask for the type's accelerator_type:<GPU> resource (False for "local": one
    machine needs no pin, and Ray tags it with its own, unsized, accelerator name)."""

    def price(self, market: str | None = None) -> float | None:
        """USD per node-hour in ``market`` (default: the market this type runs in)."""
        return self.usd_per_hour.get(market or self.market)

    def usd_per_gpu_second(self, market: str | None = None) -> float | None:
        price = self.price(market)
        return None if price is None or not self.gpus else price / self.gpus / 3600

    def usd_per_cpu_second(self, market: str | None = None) -> float | None:
        price = self.price(market)
        return None if price is None or not self.cpus else price / self.cpus / 3600


def _metadata(config: dict, path: str) -> dict:
    meta = (config.get("metadata") or {}).get(METADATA_KEY) or {}
    unknown = sorted(set(meta) - set(METADATA_KEYS))
    if unknown:
        raise NodeTypeError(f"{path}: metadata.{METADATA_KEY}: unknown key(s) {unknown}; "
                            f"allowed: {', '.join(METADATA_KEYS)}")
    return meta


def check_prices(table: Any, where: str) -> dict[str, dict[str, float]]:
    """{instance type: {market: USD per hour}}, validated (unknown market, negative price)."""
    if not isinstance(table, dict):
        raise NodeTypeError(f"{where}: expected a mapping instance type -> {{on_demand, spot}}")
    out: dict[str, dict[str, float]] = {}
    for instance, prices in table.items():
        if not isinstance(prices, dict) or set(prices) - set(MARKETS):
            raise NodeTypeError(f"{where}.{instance}: expected {{on_demand: USD, spot: USD}}, "
                                f"got {prices!r}")
        for market, value in prices.items():
            if not isinstance(value, (int, float)) or value < 0:
                raise NodeTypeError(f"{where}.{instance}.{market}: price must be a number >= 0, "
                                    f"got {value!r}")
        out[str(instance)] = {m: float(v) for m, v in prices.items()}
    return out


def _gpu_of(name: str, resources: dict, path: str) -> GpuSpec | None:
    """The GPU a launcher node type declares through ``accelerator_type:<NAME>``."""
    declared = [k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")]
    if not resources.get("GPU"):
        return None
    known = [d for d in declared if d != "A100"]
    if len(known) != 1:
        raise NodeTypeError(
            f"{path}: available_node_types.{name}: a node type with GPUs must declare its GPU "
            f"as exactly one resource accelerator_type:<NAME> (one of {', '.join(GPUS)}), "
            f"got {declared or 'none'}")
    try:
        return gpu_spec(known[0])
    except ValueError as err:
        raise NodeTypeError(f"{path}: available_node_types.{name}: {err}") from None


def _launcher_types(config: dict, prices: dict, path: str) -> list[NodeType]:
    types = []
    head = config.get("head_node_type")
    for name, spec in (config.get("available_node_types") or {}).items():
        resources = spec.get("resources") or {}
        node_config = spec.get("node_config") or {}
        instance = node_config.get("InstanceType") or node_config.get("machineType")
        spot = (node_config.get("InstanceMarketOptions") or {}).get("MarketType") == "spot"
        types.append(NodeType(
            name=name, gpu=_gpu_of(name, resources, path), gpus=int(resources.get("GPU", 0)),
            cpus=float(resources.get("CPU", 0)),
            max_nodes=1 if name == head else int(spec.get("max_workers", 0)),
            instance_type=instance, market="spot" if spot else "on_demand",
            usd_per_hour=prices.get(instance, {})))
    return types


def _local_types(table: Any, path: str) -> list[NodeType]:
    where = f"{path}: metadata.{METADATA_KEY}.node_types"
    if not isinstance(table, dict) or not table:
        raise NodeTypeError(f"{where}: provider 'local' clusters must list their node types "
                            f"here (gpu, gpus, cpus, nodes, usd_per_hour)")
    types = []
    for name, spec in table.items():
        unknown = sorted(set(spec or {}) - set(LOCAL_NODE_KEYS))
        if unknown:
            raise NodeTypeError(f"{where}.{name}: unknown key(s) {unknown}; allowed: "
                                f"{', '.join(LOCAL_NODE_KEYS)}")
        try:
            gpu = gpu_spec(spec["gpu"]) if spec.get("gpu") else None
        except ValueError as err:
            raise NodeTypeError(f"{where}.{name}: {err}") from None
        market = spec.get("market", "on_demand")
        price = spec.get("usd_per_hour")
        prices = check_prices({name: {market: price}}, where) if price is not None else {}
        types.append(NodeType(name=name, gpu=gpu, gpus=int(spec.get("gpus", 1 if gpu else 0)),
                              cpus=float(spec.get("cpus", 1)), max_nodes=int(spec.get("nodes", 1)),
                              market=market, usd_per_hour=prices.get(name, {})))
    return types


def load_node_types(path: str | Path) -> list[NodeType]:
    """The node types of a Ray cluster launcher YAML (cluster.yaml, cluster.local.yaml)."""
    import yaml
    path = str(path)
    try:
        config = yaml.safe_load(Path(path).expanduser().read_text())
    except (OSError, yaml.YAMLError) as err:
        raise NodeTypeError(f"{path}: cannot read cluster config: {err}") from None
    if not isinstance(config, dict) or "provider" not in config:
        raise NodeTypeError(f"{path}: not a Ray cluster config (no top-level 'provider')")
    meta = _metadata(config, path)
    prices = check_prices(meta.get("prices_usd_per_hour") or {},
                          f"{path}: metadata.{METADATA_KEY}.prices_usd_per_hour")
    if (config["provider"] or {}).get("type") == "local":
        return _local_types(meta.get("node_types"), path)
    return _launcher_types(config, prices, path)


def local_node_type(usd_per_hour: float | None = None) -> NodeType:
    """This machine as the one node type of a local sweep (its CUDA GPUs, if torch sees any)."""
    import torch
    gpu, gpus = None, 0
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu, gpus = gpu_from_device_name(props.name, props.total_memory), torch.cuda.device_count()
    prices = {} if usd_per_hour is None else {"on_demand": float(usd_per_hour)}
    return NodeType(name="local", gpu=gpu, gpus=gpus, cpus=float(os.cpu_count() or 1),
                    max_nodes=1, usd_per_hour=prices, pinned=False)


def override_prices(types: list[NodeType], overrides: Mapping[str, float]) -> list[NodeType]:
    """--price NODE_TYPE=USD_PER_HOUR: the price of that node type in the market it runs in."""
    names = {t.name for t in types}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise NodeTypeError(f"--price: unknown node type(s) {unknown}; node types: "
                            f"{', '.join(sorted(names))}")
    return [replace(t, usd_per_hour={**t.usd_per_hour, t.market: overrides[t.name]})
            if t.name in overrides else t for t in types]


def parse_price(option: str) -> tuple[str, float]:
    """'gpu_a10g=0.45' -> ("gpu_a10g", 0.45); one clear error otherwise."""
    name, sep, value = option.partition("=")
    try:
        price = float(value)
    except ValueError:
        price = -1.0
    if not sep or not name or price < 0:
        raise NodeTypeError(f"--price {option!r}: expected NODE_TYPE=USD_PER_HOUR, e.g. "
                            f"gpu_a10g=0.45")
    return name, price
