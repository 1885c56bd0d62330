"""Intervals and paired tests against worked examples computed without the code under test."""
from __future__ import annotations

import itertools
import math

import pytest

from orchestrator.results.stats import (
    binomial_se,
    bootstrap_interval,
    mcnemar_exact,
    mean_sd,
    paired_bootstrap,
    wilson_interval,
)


@pytest.mark.parametrize("k,n,low,high,tol", [
    # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (Wilson score): 81/263 and 15/148
    # and 0/20; also scipy.stats.binomtest(k, n).proportion_ci(method="wilson").
    (81, 263, 0.2553, 0.3662, 5e-5),
    (15, 148, 0.0624, 0.1605, 5e-5),
    (0, 20, 0.0, 0.1611, 5e-5),
    # scipy 1.17 proportion_ci(method="wilson"): a 96-problem test split at 29 and 96 right.
    (29, 96, 0.21931, 0.40009, 5e-6),
    (96, 96, 0.96152, 1.0, 5e-6),
])
def test_wilson_interval_matches_published_values(k, n, low, high, tol):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=tol) and hi == pytest.approx(high, abs=tol)


def test_wilson_interval_by_hand_for_one_of_two():
    # p = 1/2, n = 2, z^2 = 3.8415: centre (0.5 + 0.9604) / 2.9207 = 0.5; half-width
    # z sqrt(0.125 + 0.2401) / 2.9207 = 1.96 * 0.6042 / 2.9207 = 0.4055.
    lo, hi = wilson_interval(1, 2)
    assert lo == pytest.approx(0.0945, abs=1e-4) and hi == pytest.approx(0.9055, abs=1e-4)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError, match="n=0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)


def test_binomial_se():
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(0.9, 2017) == pytest.approx(math.sqrt(0.09 / 2017))


def test_mcnemar_exact_by_hand():
    # 3 problems only A solves, 10 only B solves, 7 both, 5 neither:
    # p = 2 * P(X <= 3), X ~ Bin(13, 1/2) = 2 * (1 + 13 + 78 + 286) / 8192 = 0.0922852
    a = [1] * 3 + [0] * 10 + [1] * 7 + [0] * 5
    b = [0] * 3 + [1] * 10 + [1] * 7 + [0] * 5
    test = mcnemar_exact(a, b)
    assert (test.a_only, test.b_only) == (3, 10)
    assert test.p_value == pytest.approx(2 * 378 / 8192)
    assert test.difference == pytest.approx((10 - 17) / 25)
    assert test.indistinguishable  # 0.092 >= 0.05
    # 0 vs 5 discordant: 2 / 32 = 0.0625 -- still not significant; 0 vs 6: 2 / 64 = 0.03125.
    assert mcnemar_exact([0] * 5, [1] * 5).p_value == pytest.approx(0.0625)
    six = mcnemar_exact([0] * 6 + [1] * 4, [1] * 10)
    assert six.p_value == pytest.approx(0.03125) and not six.indistinguishable


def test_mcnemar_identical_cells_and_symmetry():
    same = mcnemar_exact([1, 0, 1], [1, 0, 1])
    assert same.p_value == 1.0 and same.indistinguishable
    a, b = [1, 1, 1, 0, 0, 1, 0], [0, 1, 0, 1, 0, 0, 0]
    assert mcnemar_exact(a, b).p_value == mcnemar_exact(b, a).p_value


def test_mcnemar_rejects_unpaired_or_averaged_input():
    with pytest.raises(ValueError, match="different numbers of problems"):
        mcnemar_exact([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([0.5, 1], [1, 1])


def _exact_bootstrap_p(diff: list[float]) -> float:
    """Every one of the n**n equally likely resamples, enumerated (the test's own reference)."""
    n, observed = len(diff), sum(diff) / len(diff)
    hits = sum(abs(sum(diff[i] for i in idx) / n - observed) >= abs(observed) - 1e-12
               for idx in itertools.product(range(n), repeat=n))
    return hits / n ** n


def test_paired_bootstrap_matches_exhaustive_enumeration():
    a = [1.0, 1.0, 0.5, 0.0, 1.0]
    b = [0.0, 0.5, 0.5, 0.5, 1.0]
    exact = _exact_bootstrap_p([x - y for x, y in zip(a, b)])
    test = paired_bootstrap(a, b, resamples=20_000, seed=3)
    # Monte Carlo standard error sqrt(p(1-p)/20000) < 0.0036; allow 4 of them.
    assert test.p_value == pytest.approx(exact, abs=0.015)
    assert test.difference == pytest.approx(0.2)
    assert test.method == "paired-bootstrap"


def test_paired_bootstrap_of_identical_cells_is_one():
    assert paired_bootstrap([1, 0, 0.5], [1, 0, 0.5]).p_value == 1.0


def test_bootstrap_interval_of_three_of_five():
    # Resampled means are k/5 with k ~ Bin(5, 0.6): P(k <= 0) = 0.0102 < 0.025 < P(k <= 1) =
    # 0.0870, and P(k <= 4) = 1 - 0.6**5 = 0.9222 < 0.975: the 95% interval is [0.2, 1.0].
    assert bootstrap_interval([1, 1, 1, 0, 0], seed=1) == (pytest.approx(0.2), pytest.approx(1.0))


def test_bootstrap_rejects_scores_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bootstrap_interval([0.5, 2.0])


def test_mean_sd_by_hand():
    # values 0.70, 0.74: mean 0.72, sd = |0.04| / sqrt(2) = 0.028284
    mean, sd = mean_sd([0.70, 0.74])
    assert mean == pytest.approx(0.72) and sd == pytest.approx(0.04 / math.sqrt(2))
    assert mean_sd([0.5]) == (0.5, None)
    with pytest.raises(ValueError):
        mean_sd([])
