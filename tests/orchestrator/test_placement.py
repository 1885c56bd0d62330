"""Memory-aware placement of the full grid's real-size trials on a fake two-type GPU cluster."""
from __future__ import annotations

import pytest

from orchestrator.costs.estimate import work_from_plan
from orchestrator.driver.plan import build_plan
from orchestrator.driver.spaces import load_space
from orchestrator.placement.hardware import GPUS
from orchestrator.placement.node_types import NodeType
from orchestrator.placement.packing import (
    MEMORY_MARGIN,
    PIN_AMOUNT,
    Demand,
    PlacementError,
    Slot,
    first_fit,
    gpu_share,
    place,
)

GIB = 2**30
SMALL = NodeType("small", GPUS["A10G"], gpus=1, cpus=8, max_nodes=1,
                 usd_per_hour={"on_demand": 1.2})          # 24 GB x 1
BIG = NodeType("big", GPUS["A100-80G"], gpus=8, cpus=96, max_nodes=1,
               usd_per_hour={"on_demand": 40.0})           # 80 GB x 8
CPU = NodeType("cpu", None, gpus=0, cpus=16, max_nodes=4)


@pytest.fixture(scope="module")
def grid_slots() -> dict[str, Slot]:
    space = load_space("full_grid")
    work = work_from_plan(build_plan(space), [c.id for c in space.cells],
                          [15] * len(space.cells), [16] * len(space.cells))
    return place([w.demand for w in work], [CPU, SMALL, BIG])


def waves(slots: list[Slot], n_gpus: int) -> list[list[list[Slot]]]:
    """All of a node type's trials as Ray would start them: GPUs filled by first fit, then the
    next wave when those trials end."""
    out, left = [], list(slots)
    while left:
        gpus = first_fit(left, n_gpus)
        placed = {id(s) for g in gpus for s in g}
        assert placed, "a slot that fits no empty GPU"
        out.append(gpus)
        left = [s for s in left if id(s) not in placed]
    return out


def test_no_gpu_is_planned_beyond_its_memory(grid_slots):
    assert len(grid_slots) == 132
    for node in (SMALL, BIG):
        mine = [s for s in grid_slots.values() if s.node_type == node.name]
        assert mine, f"placement left {node.name} unused"
        for wave in waves(mine, node.gpus * node.max_nodes):
            for gpu in wave:
                assert sum(s.share for s in gpu) <= 1 + 1e-9
                planned = sum(s.peak_bytes for s in gpu)
                assert planned <= (1 - MEMORY_MARGIN) * node.gpu.memory_bytes, \
                    [(s.key, s.peak_bytes / GIB) for s in gpu]


def test_vicuna_never_lands_on_a_24_gb_gpu(grid_slots):
    vicuna = [s for s in grid_slots.values() if "|vicuna-7b|" in s.key]
    assert len(vicuna) == 66
    assert all(s.node_type == "big" for s in vicuna), \
        [(s.key, s.peak_bytes / GIB) for s in vicuna if s.node_type != "big"]


def test_flan_t5_qformer_lora_trials_share_an_80_gb_gpu(grid_slots):
    qformer = [s for s in grid_slots.values() if s.node_type == "big"
               and "|flan-t5-xl|qformer_lora/" in s.key]
    assert len(qformer) >= 3
    busiest = max(first_fit(qformer, BIG.gpus), key=len)
    assert len(busiest) >= 3
    assert sum(s.peak_bytes for s in busiest) <= (1 - MEMORY_MARGIN) * BIG.gpu.memory_bytes


def test_each_trial_asks_for_its_share_and_its_node_types_gpu(grid_slots):
    slot = next(s for s in grid_slots.values() if s.node_type == "big")
    assert slot.resources(cpus=2) == {"CPU": 2.0, "GPU": slot.share,
                                      "accelerator_type:A100-80G": PIN_AMOUNT}
    assert slot.share == gpu_share(slot.peak_bytes, BIG.gpu)
    assert slot.peak_bytes <= slot.share * (1 - MEMORY_MARGIN) * BIG.gpu.memory_bytes


def test_share_rounds_up_and_refuses_more_than_one_gpu():
    usable = (1 - MEMORY_MARGIN) * GPUS["A10G"].memory_bytes
    assert gpu_share(int(0.301 * usable), GPUS["A10G"]) == 0.31
    assert gpu_share(int(usable), GPUS["A10G"]) == 1.0
    assert gpu_share(int(usable) + 2**20, GPUS["A10G"]) is None


def test_a_trial_that_fits_no_node_type_is_refused_naming_it():
    demands = [Demand("scienceqa|vicuna-7b|baseline/none|r0", {g: 90 * GIB for g in GPUS}),
               Demand("iconqa|flan-t5-xl|qformer_lora/all|r1", {g: 12 * GIB for g in GPUS})]
    with pytest.raises(PlacementError) as err:
        place(demands, [CPU, SMALL, BIG])
    text = str(err.value)
    assert text.startswith("1 trial(s) fit on no node type's GPU; the largest GPU is A100-80G "
                           "(79.1 GiB, 75.2 GiB usable with the 5% margin")
    assert "scienceqa|vicuna-7b|baseline/none|r0: planned peak 90.0 GiB" in text
    assert "flan-t5-xl" not in text and "Nothing was started" in text
    with pytest.raises(PlacementError, match="no node type has a GPU"):
        place(demands[1:], [CPU])


def test_small_trials_spread_over_both_types_by_planned_work():
    """Equal trials: the 8-GPU pool takes ~8x the work of the 1-GPU pool (makespan rule)."""
    demands = [Demand(f"t{i}", {g: 5 * GIB for g in GPUS}, {g: 100.0 for g in GPUS})
               for i in range(90)]
    slots = place(demands, [SMALL, BIG])
    on_small = sum(s.node_type == "small" for s in slots.values())
    assert on_small == 10 and len(slots) == 90
