"""Per-cell test statistics for Table 1: mean +- sd over seeds, a 95% interval, and which cells
are statistically indistinguishable from the best cell of their group.

Input: each cell's per-problem test correctness, one mapping pid -> correct per seed (from the
trials' predictions artifacts, trainables.predictions). Rules (orchestrator.results.stats):

- accuracy: mean over seeds of each seed's accuracy; sd over seeds (sample sd, None for one);
- interval: one seed -> Wilson on k/n; several -> percentile bootstrap over problems of the
  per-problem correctness averaged over seeds (the problems are what a test set samples);
- best of a group (benchmark, LLM): the highest mean test accuracy (first on a tie, grid order);
- every other cell is compared with it on the problems both were scored on: exact McNemar
  when both have one seed, else the paired bootstrap on seed-averaged correctness; p >= 0.05
  (stats.ALPHA) means "indistinguishable from the best".
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.results.stats import (
    PairedTest,
    bootstrap_interval,
    mcnemar_exact,
    mean_sd,
    paired_bootstrap,
    wilson_interval,
)


@dataclass(frozen=True)
class CellScores:
    """One cell's per-problem test correctness, per seed."""

    key: Hashable
    group: Hashable
    seeds: tuple[Mapping[str, bool], ...]

    def __post_init__(self) -> None:
        if not self.seeds or any(not s for s in self.seeds):
            raise ValueError(f"cell {self.key}: needs per-problem test results for every seed")
        pids = set(self.seeds[0])
        if any(set(s) != pids for s in self.seeds[1:]):
            raise ValueError(f"cell {self.key}: its seeds were scored on different problems")

    @property
    def pids(self) -> list[str]:
        return sorted(self.seeds[0])

    def per_problem(self, pids: Sequence[str]) -> list[float]:
        """Correctness of each problem averaged over the seeds."""
        return [sum(float(s[p]) for s in self.seeds) / len(self.seeds) for p in pids]


@dataclass(frozen=True)
class CellStats:
    key: Hashable
    n_problems: int
    n_seeds: int
    mean: float
    sd: float | None
    ci_low: float
    ci_high: float
    ci_method: str
    best_in_group: bool
    versus_best: PairedTest | None
    """The paired test against the group's best (None for the best itself)."""

    @property
    def indistinguishable(self) -> bool:
        """The best itself, or no evidence at level ALPHA that it differs from the best."""
        return self.best_in_group or (self.versus_best is not None
                                      and self.versus_best.indistinguishable)


def _interval(cell: CellScores) -> tuple[float, float, str]:
    pids = cell.pids
    if len(cell.seeds) == 1:
        low, high = wilson_interval(sum(cell.seeds[0][p] for p in pids), len(pids))
        return low, high, "wilson"
    low, high = bootstrap_interval(cell.per_problem(pids))
    return low, high, "bootstrap"


def _versus(cell: CellScores, best: CellScores) -> PairedTest:
    common = sorted(set(cell.seeds[0]) & set(best.seeds[0]))
    if not common:
        raise ValueError(f"cells {cell.key} and {best.key} share no test problem")
    if len(cell.seeds) == 1 and len(best.seeds) == 1:
        return mcnemar_exact([cell.seeds[0][p] for p in common], [best.seeds[0][p] for p in common])
    return paired_bootstrap(cell.per_problem(common), best.per_problem(common))


def cell_stats(cells: Sequence[CellScores]) -> dict[Hashable, CellStats]:
    """Statistics of every cell (module docstring), keyed by ``CellScores.key``."""
    means = {c.key: mean_sd([sum(s.values()) / len(s) for s in c.seeds]) for c in cells}
    best: dict[Hashable, CellScores] = {}
    for c in cells:
        if c.group not in best or means[c.key][0] > means[best[c.group].key][0]:
            best[c.group] = c
    out = {}
    for c in cells:
        low, high, method = _interval(c)
        is_best = best[c.group] is c
        out[c.key] = CellStats(
            key=c.key, n_problems=len(c.seeds[0]), n_seeds=len(c.seeds), mean=means[c.key][0],
            sd=means[c.key][1], ci_low=low, ci_high=high, ci_method=method, best_in_group=is_best,
            versus_best=None if is_best else _versus(c, best[c.group]))
    return out
