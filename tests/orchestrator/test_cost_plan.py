"""The dry-run's bill: makespan, the ASHA estimate, and GPU-hours/dollars of the full grid."""
from __future__ import annotations

import math
import re

import pytest

from orchestrator.costs.estimate import PLANNING_MFU, RECOMPUTE_FACTOR, asha_fraction, makespan
from orchestrator.driver.plan import build_plan
from orchestrator.driver.schedulers import asha_settings
from orchestrator.driver.spaces import load_space
from orchestrator.placement.hardware import GPUS
from orchestrator.sweep import main
from trainables.defaults import AshaSettings


def test_makespan_is_longest_processing_time_first():
    assert makespan([3, 3, 2, 2, 2], 2) == 7
    assert makespan([10, 1, 1], 8) == 10
    assert makespan([1.0] * 16, 8) == 2


def test_asha_fraction_follows_the_rungs():
    # E=15, grace 1, rf 4: everyone runs epoch 1, 1/4 run epochs 2-4, 1/16 run epochs 5-15.
    assert asha_fraction(AshaSettings(15, 1, 4)) == pytest.approx((1 + 3 / 4 + 11 / 16) / 15)
    assert asha_fraction(AshaSettings(8, 8, 4)) == 1.0  # one rung at the budget stops nobody


def test_asha_fraction_weighs_the_brackets():
    # E=16, grace 1, rf 2. Bracket 0 (rungs 1,2,4,8): 1 + 1/2 + 2/4 + 4/8 + 8/16 = 3 of 16
    # epochs; bracket 1 (rungs 2,4,8): 2 + 2/2 + 4/4 + 8/8 = 5 of 16. Ray draws bracket b with
    # weight exp(rungs_b - rungs_0): 1 and 1/e.
    one, two = AshaSettings(16, 1, 2), AshaSettings(16, 1, 2, brackets=2)
    assert asha_fraction(one) == pytest.approx(3 / 16)
    w = math.exp(-1)
    assert asha_fraction(two) == pytest.approx((3 / 16 + w * 5 / 16) / (1 + w))


@pytest.mark.slow  # plans all 132 trials at real size twice (meta device): ~20 s
def test_dry_run_prices_the_full_grid_on_a10g_spot_and_a100_on_demand(capsys):
    """The planner says every Flan-T5-XL trial fits an A10G without activation checkpointing
    and every Vicuna-7B trial only with it, and an A100-40GB holds all of them without."""
    assert main(["--space", "full_grid", "--dry-run", "--makespan-gpus", "8"]) == 0
    out = capsys.readouterr().out
    rows = {(m[0], m[1]): m[2:] for m in re.findall(
        r"^(gpu_\w+)\s+\S+\s+(on_demand|spot)\s+([\d.]+)\s+(\d+)\+(\d+)/132\s+([\d,.]+)\s+([\d,]+)"
        r"\s+([\d,.]+)$", out, flags=re.M)}
    plan = build_plan(load_space("full_grid"))

    def hours(trials, gpu: str) -> float:
        return sum(15 * t.est_train_flops_per_epoch for t in trials) / (
            GPUS[gpu].bf16_flops * PLANNING_MFU) / 3600
    flan = [t for t in plan if t.llm == "flan-t5-xl"]
    vicuna = [t for t in plan if t.llm == "vicuna-7b"]
    expected = {("gpu_a10g", "spot"): (0.485, 66, 66, hours(flan, "A10G")
                                       + RECOMPUTE_FACTOR * hours(vicuna, "A10G")),
                ("gpu_a100", "on_demand"): (32.773 / 8, 132, 0, hours(plan, "A100-40G"))}
    for key, (price, plain, ck, gpu_hours) in expected.items():
        rate, fit, fit_ck, got_hours, usd, _ = rows[key]
        assert (int(fit), int(fit_ck)) == (plain, ck) and float(rate) == pytest.approx(price, abs=1e-3)
        assert float(got_hours.replace(",", "")) == pytest.approx(gpu_hours, abs=0.05)
        assert float(usd.replace(",", "")) == pytest.approx(gpu_hours * price, abs=1)
    assert "auto placement (66 on gpu_a10g, 66 on gpu_a100;" in out
    asha = asha_settings(15, "flan-t5-xl")  # the recipes' budget and ASHA defaults
    share = asha_fraction(asha)
    assert f"with ASHA (defaults): about {share:.0%}" in out


def test_dry_run_on_one_node_type_with_the_asha_options(capsys):
    assert main(["--space", "smoke", "--dry-run", "--node-type", "gpu_a10g", "--grace-period", "1",
                 "--reduction-factor", "2", "--brackets", "2"]) == 0
    out = capsys.readouterr().out
    assert "gpu_a10g" in out and "gpu_a100 " not in out
    # smoke's 2-epoch budget: bracket 0 (rung 1) runs 1.5 of 2 epochs, bracket 1 (no rung below
    # the budget) all 2, weights 1 and 1/e -> 82% (one bracket alone: 75%).
    share = (0.75 + math.exp(-1)) / (1 + math.exp(-1))
    assert f"about {share:.0%} of these trial-epochs" in out and f"{share:.0%}" == "82%"
