"""Per-cell statistics on hand-made predictions (counts and p-values worked out by hand)."""
from __future__ import annotations

import math

import pytest

from orchestrator.results.cell_stats import CellScores, cell_stats

PIDS = [f"p{i:02d}" for i in range(20)]


def right(*ranges: range) -> dict[str, bool]:
    ok = {i for r in ranges for i in r}
    return {p: i in ok for i, p in enumerate(PIDS)}


def test_one_seed_cells_against_the_best_of_their_group():
    a = CellScores("A", "g", (right(range(15)),))                    # 15/20: the best
    b = CellScores("B", "g", (right(range(10), range(15, 17)),))     # 12/20
    d = CellScores("D", "g", (right(range(5)),))                     # 5/20
    lone = CellScores("E", "other", (right(range(2)),))              # alone in its group
    stats = cell_stats([a, b, d, lone])
    assert stats["A"].best_in_group and stats["A"].indistinguishable and stats["A"].versus_best is None
    # B vs A: A alone right on p10-p14 (5), B alone on p15, p16 (2): exact McNemar
    # p = 2 (C(7,0) + C(7,1) + C(7,2)) / 2^7 = 58 / 128.
    vb = stats["B"].versus_best
    assert (vb.method, vb.a_only, vb.b_only) == ("mcnemar-exact", 2, 5)
    assert vb.p_value == pytest.approx(58 / 128) and stats["B"].indistinguishable
    # D vs A: A alone right on 10 problems, D on none: p = 2 / 2^10.
    assert stats["D"].versus_best.p_value == pytest.approx(2 / 1024)
    assert not stats["D"].indistinguishable
    assert stats["E"].best_in_group
    # Wilson interval of 15/20 (scipy.stats.binomtest(15, 20).proportion_ci("wilson")).
    assert stats["A"].ci_method == "wilson" and stats["A"].n_problems == 20
    assert stats["A"].ci_low == pytest.approx(0.531299, abs=1e-6)
    assert stats["A"].ci_high == pytest.approx(0.888138, abs=1e-6)
    assert stats["A"].sd is None and stats["A"].mean == 0.75


def test_seeds_give_mean_sd_and_a_bootstrap_comparison():
    two = CellScores("S", "g", (right(range(14)), right(range(16))))  # 0.70 and 0.80
    one = CellScores("T", "g", (right(range(6)),))                    # 0.30
    stats = cell_stats([one, two])
    s = stats["S"]
    assert s.n_seeds == 2 and s.mean == pytest.approx(0.75)
    assert s.sd == pytest.approx(0.1 / math.sqrt(2))
    assert s.ci_method == "bootstrap" and s.ci_low < 0.75 < s.ci_high and s.best_in_group
    t = stats["T"].versus_best
    assert t.method == "paired-bootstrap" and t.difference == pytest.approx(0.30 - 0.75)
    assert not stats["T"].indistinguishable  # 9 of 20 problems separate them, all one way


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="different problems"):
        CellScores("X", "g", (right(range(3)), {"q": True}))
    with pytest.raises(ValueError, match="every seed"):
        CellScores("X", "g", ())
