"""Per-trial cost (GPU/CPU-seconds, MFU, dollars) and the sweep's totals and savings."""
from __future__ import annotations

import pytest

from orchestrator.costs.totals import Amount, RunCost, format_sweep_cost, sweep_cost
from orchestrator.costs.trial import CostBook
from orchestrator.placement.hardware import GPUS
from orchestrator.placement.node_types import NodeType

A100 = NodeType("gpu_a100", GPUS["A100-40G"], gpus=8, cpus=96, max_nodes=1,
                usd_per_hour={"on_demand": 32.0})
LOCAL = NodeType("local", None, gpus=0, cpus=4, max_nodes=1, usd_per_hour={"on_demand": 0.4},
                 pinned=False)
BOOK = CostBook({"gpu_a100": A100, "local": LOCAL}, {"cell-gpu": "gpu_a100"},
                {"cell-gpu": 3e12}, default_node_type="local")


def test_a_packed_gpu_trial_pays_its_share():
    held = {"CPU": 2.0, "GPU": 0.25, "accelerator_type:A100-40G": 0.001}
    cost = BOOK.trial_cost("cell-gpu", held, wall_s=3600.0, samples_per_s=20.0)
    assert (cost.gpu_seconds, cost.cpu_seconds, cost.node_type) == (900.0, 7200.0, "gpu_a100")
    assert cost.cost_usd == pytest.approx(900.0 * 32.0 / 8 / 3600)  # $1 = a quarter GPU-hour
    assert cost.mfu == pytest.approx(3e12 * 20.0 / 312e12)
    assert cost.metrics() == {"gpu_share": 0.25, "gpu_seconds": 900.0,
                              "cpu_seconds": 7200.0, "cost_usd": pytest.approx(1.0),
                              "train_samples_per_s": 20.0, "mfu": pytest.approx(3e12 * 20 / 312e12)}


def test_a_cpu_trial_pays_its_cpus_and_has_no_mfu():
    cost = BOOK.trial_cost("cell-tiny", {"CPU": 1.0, "GPU": 0.0}, wall_s=720.0, samples_per_s=5.0)
    assert (cost.gpu_seconds, cost.cpu_seconds, cost.mfu) == (0.0, 720.0, None)
    assert cost.cost_usd == pytest.approx(720.0 * 0.4 / 4 / 3600)
    unknown = CostBook({}, {}, {}).trial_cost("c", {"CPU": 1.0}, wall_s=10.0, samples_per_s=None)
    assert unknown.cost_usd is None and unknown.node_type is None and unknown.cpu_seconds == 10.0


def run(cell, status="finished", usd=1.0, epochs=8, budget=8, retune_of=None):
    return RunCost(cell, status, retune_of, epochs, budget, gpu_seconds=100.0 * usd,
                   cpu_seconds=10.0 * usd, cost_usd=usd)


def test_sweep_totals_and_what_asha_saved():
    runs = [run("a"), run("b", status="stopped", usd=1.0, epochs=2), run("c", usd=2.0)]
    cost = sweep_cost(runs, retune_samples=None)
    assert cost.total == Amount(400.0, 40.0, 4.0)
    assert cost.asha_epochs_not_run == 6
    assert cost.asha_saved == Amount(300.0, 30.0, 3.0)  # 6 epochs at $0.5 each
    assert cost.retune_saved is None
    m = cost.metrics()
    assert (m["total_cost_usd"], m["asha_saved_gpu_seconds"], m["asha_trial_epochs_not_run"]) == \
        (4.0, 300.0, 6.0)
    assert "retune_saved_cost_usd" not in m


def test_retuning_only_starred_cells_saves_the_other_cells_retunes():
    runs = [run("a"), run("b", usd=2.0), run("c", status="diverged", usd=0.5),
            run("c", retune_of="c", usd=0.7), run("c", retune_of="c", usd=0.8)]
    cost = sweep_cost(runs, retune_samples=4)
    assert cost.retune_trials == 2
    assert cost.retune_saved == Amount(1200.0, 120.0, 12.0)  # 4 x (a + b)
    text = format_sweep_cost(cost)
    assert "5 trials: 500.0 GPU-s, 50.0 CPU-s, $5.00" in text
    assert "saved by retuning only the starred cells (2 retune trials ran): 1,200.0 GPU-s" in text
    assert Amount(7200.0, 36.0, 0.25).text() == "2.00 GPU-h, 36.0 CPU-s, $0.2500"


def test_a_trial_without_a_price_makes_the_dollar_total_unknown():
    runs = [run("a"), RunCost("b", "finished", None, 8, 8, 50.0, 5.0, None)]
    cost = sweep_cost(runs, retune_samples=None)
    assert cost.total.cost_usd is None and cost.total.gpu_seconds == 150.0
    assert "price unknown" in format_sweep_cost(cost) and "total_cost_usd" not in cost.metrics()
