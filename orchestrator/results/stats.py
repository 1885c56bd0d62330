"""Uncertainty of accuracies: intervals per cell, mean +- sd over seeds, paired tests between cells.

Why: the paper's Table 1 has many cells within 1-2 points of each other, about the width of
the 95% interval of a ~2,000-problem test set, from a single seed. These functions say which
differences a test set of that size can resolve.

- ``wilson_interval``: the 95% interval of one accuracy k/n (Wilson score interval; unlike the
  normal "Wald" interval it stays inside [0, 1] and keeps its coverage near 0 and 1 and for
  small n, e.g. a 96-problem synthetic test split).
- ``bootstrap_interval``: percentile interval over problems of a per-problem score in [0, 1]
  (used when a cell has several seeds: the score of a problem is its correctness averaged over
  the seeds, so the interval reflects the problems, not the seeds, as the single-seed one does).
- ``mcnemar_exact``: two cells scored on the same problems. Only the discordant problems carry
  information; under "equally accurate" each is equally likely to favour either cell, so the
  two-sided p-value is the exact binomial tail of the smaller discordant count (no chi-square
  approximation: discordant counts are small on small test sets).
- ``paired_bootstrap``: the same question when per-problem scores are seed averages (not 0/1):
  problems are resampled jointly for both cells, and the two-sided p-value is the share of
  resampled differences at least as far from the observed difference as the observed one is
  from 0 (the bootstrap distribution shifted to the null, Berg-Kirkpatrick et al. 2012).
- ``mean_sd``: mean and sample standard deviation (n - 1) over seeds.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054
"""Two-sided 95% standard-normal quantile."""
ALPHA = 0.05
"""Significance level of "indistinguishable from the best" (p >= ALPHA)."""
BOOTSTRAP_RESAMPLES = 10_000
"""Bootstrap resamples: the Monte Carlo error of a p-value near 0.05 is then ~0.002."""


def _check_fraction(successes: int, n: int) -> None:
    if n < 1:
        raise ValueError(f"an accuracy needs at least one problem, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion successes / n (default 95%)."""
    _check_fraction(successes, n)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp the round-off at the ends (k = 0 or n gives exactly 0 or 1 analytically).
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_se(p: float, n: int) -> float:
    """Standard error sqrt(p (1 - p) / n) of an accuracy p measured on n problems."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def _scores(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty list of per-problem scores")
    if not np.all((arr >= 0) & (arr <= 1)):
        raise ValueError(f"{name}: per-problem scores must lie in [0, 1]")
    return arr


def _resample_index(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_interval(scores: Sequence[float], *, level: float = 0.95,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean per-problem score (problems resampled)."""
    arr = _scores(scores, "bootstrap_interval")
    means = arr[_resample_index(arr.size, resamples, seed)].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedTest:
    """Outcome of comparing cell A with cell B on the same problems."""

    p_value: float
    difference: float
    """Mean score of A minus mean score of B."""
    method: str
    """"mcnemar-exact" or "paired-bootstrap"."""
    a_only: int = 0
    """Problems A got right and B wrong (McNemar's discordant counts; 0 for the bootstrap)."""
    b_only: int = 0

    @property
    def indistinguishable(self) -> bool:
        """No evidence at level ALPHA that A and B differ in accuracy."""
        return self.p_value >= ALPHA


def _paired(a: Sequence[float], b: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _scores(a, name), _scores(b, name)
    if x.size != y.size:
        raise ValueError(f"{name}: the two cells were scored on different numbers of problems "
                         f"({x.size} vs {y.size}); a paired test needs the same problems")
    return x, y


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> PairedTest:
    """Exact two-sided McNemar test on per-problem correctness (same problems, same order)."""
    x, y = _paired([float(v) for v in a], [float(v) for v in b], "mcnemar_exact")
    if np.any((x != 0) & (x != 1)) or np.any((y != 0) & (y != 1)):
        raise ValueError("mcnemar_exact: correctness must be 0/1 (use paired_bootstrap for averages)")
    a_only = int(np.sum((x == 1) & (y == 0)))
    b_only = int(np.sum((x == 0) & (y == 1)))
    n = a_only + b_only
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1))
    p = 1.0 if n == 0 else min(1.0, 2 * tail / 2 ** n)
    return PairedTest(p_value=p, difference=float(x.mean() - y.mean()), method="mcnemar-exact",
                      a_only=a_only, b_only=b_only)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> PairedTest:
    """Two-sided paired bootstrap test of mean(a) == mean(b) (module docstring)."""
    x, y = _paired(a, b, "paired_bootstrap")
    diff = x - y
    observed = float(diff.mean())
    deltas = diff[_resample_index(diff.size, resamples, seed)].mean(axis=1)
    # Shifted to the null (mean difference 0); tiny tolerance so that exact ties count as "as far".
    extreme = np.abs(deltas - observed) >= abs(observed) - 1e-12
    return PairedTest(p_value=float(extreme.mean()), difference=observed,
                      method="paired-bootstrap")


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1); sd is None for a single value."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("mean_sd: expected at least one value")
    sd = float(arr.std(ddof=1)) if arr.size > 1 else None
    return float(arr.mean()), sd
