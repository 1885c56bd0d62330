"""Node types and prices from the cluster launcher YAMLs (the shipped ones and broken ones)."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.placement.hardware import GPUS, gpu_from_device_name, gpu_spec
from orchestrator.placement.node_types import (
    NodeTypeError,
    load_node_types,
    override_prices,
    parse_price,
)

REPO = Path(__file__).resolve().parents[2]
NODE = """\
cluster_name: c
provider: {type: aws, region: us-west-2}
available_node_types:
  gpu:
    resources: RESOURCES
    node_config: {InstanceType: g5.2xlarge}
    max_workers: 2
head_node_type: gpu
"""


def test_shipped_cluster_yaml_declares_gpus_and_prices():
    types = {t.name: t for t in load_node_types(REPO / "cluster.yaml")}
    a10g, a100, head = types["gpu_a10g"], types["gpu_a100"], types["head_cpu"]
    assert (a10g.gpu, a10g.gpus, a10g.cpus, a10g.max_nodes) == (GPUS["A10G"], 1, 8.0, 8)
    assert a10g.market == "spot" and a10g.price() == a10g.price("spot") < a10g.price("on_demand")
    assert (a100.gpu, a100.gpus, a100.market) == (GPUS["A100-40G"], 8, "on_demand")
    assert a100.usd_per_gpu_second() == pytest.approx(a100.price() / 8 / 3600)
    assert head.gpu is None and head.max_nodes == 1


def test_shipped_local_cluster_describes_its_loopback_nodes():
    (loopback,) = load_node_types(REPO / "cluster.local.yaml")
    assert (loopback.name, loopback.gpu, loopback.cpus, loopback.max_nodes) == \
        ("loopback", None, 1.0, 2)


@pytest.mark.parametrize("resources,needle", [
    ('{CPU: 8, GPU: 1}', "must declare its GPU as exactly one resource accelerator_type"),
    ('{CPU: 8, GPU: 1, "accelerator_type:A100": 1}', "got ['A100']"),
    ('{CPU: 8, GPU: 1, "accelerator_type:V100": 1}', "unknown GPU type 'V100'"),
])
def test_a_gpu_node_type_must_name_a_known_gpu(tmp_path, resources, needle):
    path = tmp_path / "c.yaml"
    path.write_text(NODE.replace("RESOURCES", resources))
    with pytest.raises(NodeTypeError, match="available_node_types.gpu") as err:
        load_node_types(path)
    assert needle in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("metadata,needle", [
    ("{instructblip_peft: {price: 1}}", "unknown key(s) ['price']"),
    ("{instructblip_peft: {prices_usd_per_hour: {g5.2xlarge: {reserved: 1}}}}",
     "prices_usd_per_hour.g5.2xlarge: expected {on_demand: USD, spot: USD}"),
    ("{instructblip_peft: {prices_usd_per_hour: {g5.2xlarge: {spot: -1}}}}",
     "must be a number >= 0"),
])
def test_bad_price_tables_are_named(tmp_path, metadata, needle):
    path = tmp_path / "c.yaml"
    path.write_text(NODE.replace("RESOURCES", '{CPU: 8, GPU: 1, "accelerator_type:A10G": 1}')
                    + f"metadata: {metadata}\n")
    with pytest.raises(NodeTypeError) as err:
        load_node_types(path)
    assert needle in str(err.value)


def test_price_option_overrides_the_market_the_type_runs_in():
    types = load_node_types(REPO / "cluster.yaml")
    name, price = parse_price("gpu_a10g=0.3")
    a10g = next(t for t in override_prices(types, {name: price}) if t.name == "gpu_a10g")
    assert a10g.price() == 0.3 and a10g.price("on_demand") == 1.212
    with pytest.raises(NodeTypeError, match="unknown node type"):
        override_prices(types, {"gpu_h100": 1.0})
    for bad in ("gpu_a10g", "gpu_a10g=cheap", "=1", "gpu_a10g=-2"):
        with pytest.raises(NodeTypeError, match="expected NODE_TYPE=USD_PER_HOUR"):
            parse_price(bad)


def test_local_gpus_are_recognised_by_model_and_size():
    mib = 2**20
    assert gpu_from_device_name("NVIDIA A10G", 23_028 * mib).name == "A10G"
    assert gpu_from_device_name("NVIDIA A100-SXM4-80GB", 81_920 * mib).name == "A100-80G"
    assert gpu_from_device_name("NVIDIA A100-PCIE-40GB", 40_960 * mib).name == "A100-40G"
    assert gpu_from_device_name("NVIDIA H100 80GB HBM3", 81_559 * mib).name == "H100"
    unknown = gpu_from_device_name("Tesla T4", 15_360 * mib)
    assert (unknown.memory_bytes, unknown.bf16_flops) == (15_360 * mib, 0.0)
    with pytest.raises(ValueError, match="say A100-40G or A100-80G"):
        gpu_spec("A100")
