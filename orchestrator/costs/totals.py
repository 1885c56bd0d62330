"""The sweep's bill: totals over its trials and what ASHA and selective retuning saved.

Why read the trials back from MLflow: the child runs already carry every trial's cost
(orchestrator.costs.trial, logged when it ended), including trials that finished before a
``--resume``; the parent run and the end-of-sweep summary then show the same numbers.

Savings (estimates, stated as such in the summary):
  ASHA:    trial-epochs not run = sum over scheduler-stopped trials of (its epoch budget - the
           epochs it ran); each priced at that trial's own cost per epoch run. An upper bound:
           a trial left running might still have stopped early on its own (patience).
  retunes: the sweep re-tunes only the divergent (starred) cells; re-tuning every other cell
           with the same number of trials would have cost retune_samples x that cell's grid
           trial (each retune trial priced like the grid trial of its cell).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

UNITS = ("gpu_seconds", "cpu_seconds", "cost_usd")


@dataclass(frozen=True)
class RunCost:
    """One child run's cost as MLflow holds it."""

    cell: str
    status: str
    retune_of: str | None
    epochs_run: int
    epoch_budget: int
    gpu_seconds: float
    cpu_seconds: float
    cost_usd: float | None


@dataclass(frozen=True)
class Amount:
    """GPU-seconds, CPU-seconds and dollars (None: some part had no price)."""

    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    cost_usd: float | None = 0.0

    def __add__(self, other: Amount) -> Amount:
        usd = None if self.cost_usd is None or other.cost_usd is None \
            else self.cost_usd + other.cost_usd
        return Amount(self.gpu_seconds + other.gpu_seconds, self.cpu_seconds + other.cpu_seconds,
                      usd)

    def scaled(self, factor: float) -> Amount:
        usd = None if self.cost_usd is None else self.cost_usd * factor
        return Amount(self.gpu_seconds * factor, self.cpu_seconds * factor, usd)

    def text(self) -> str:
        """Hours from one hour up, seconds below (a CPU smoke sweep is seconds); cents below $1."""
        def span(seconds: float, unit: str) -> str:
            return f"{seconds / 3600:,.2f} {unit}-h" if seconds >= 3600 else f"{seconds:,.1f} {unit}-s"
        usd = "price unknown" if self.cost_usd is None else (
            f"${self.cost_usd:,.2f}" if self.cost_usd >= 1 else f"${self.cost_usd:.4f}")
        return f"{span(self.gpu_seconds, 'GPU')}, {span(self.cpu_seconds, 'CPU')}, {usd}"


def _amount(run: RunCost) -> Amount:
    return Amount(run.gpu_seconds, run.cpu_seconds, run.cost_usd)


@dataclass(frozen=True)
class SweepCost:
    """Totals and savings of one sweep."""

    trials: int
    total: Amount
    asha_epochs_not_run: int
    asha_saved: Amount
    retune_trials: int
    retune_saved: Amount | None
    """None when the sweep ran without retunes (--no-retune)."""

    def metrics(self) -> dict[str, float]:
        """Parent-run metrics (dollar keys only when every trial had a price)."""
        out = {"sweep_trials": float(self.trials),
               "asha_trial_epochs_not_run": float(self.asha_epochs_not_run)}
        parts = [("total", self.total), ("asha_saved", self.asha_saved),
                 ("retune_saved", self.retune_saved)]
        for prefix, amount in parts:
            for unit, value in asdict(amount).items() if amount else ():
                if value is not None:
                    out[f"{prefix}_{unit}"] = float(value)
        return out


def sweep_cost(runs: Sequence[RunCost], retune_samples: int | None) -> SweepCost:
    """Totals and savings (module docstring) of a sweep's child runs."""
    total, asha, not_run = Amount(), Amount(), 0
    for run in runs:
        total = total + _amount(run)
        if run.status == "stopped" and run.epochs_run > 0:
            missing = max(0, run.epoch_budget - run.epochs_run)
            not_run += missing
            asha = asha + _amount(run).scaled(missing / run.epochs_run)
    retune_runs = [r for r in runs if r.retune_of]
    saved = None
    if retune_samples:
        retuned = {r.retune_of for r in retune_runs}
        saved = Amount()
        for run in runs:
            if not run.retune_of and run.cell not in retuned:
                saved = saved + _amount(run).scaled(retune_samples)
    return SweepCost(trials=len(runs), total=total, asha_epochs_not_run=not_run, asha_saved=asha,
                     retune_trials=len(retune_runs), retune_saved=saved)


def format_sweep_cost(cost: SweepCost) -> str:
    """The summary's cost block."""
    lines = ["cost (GPU/CPU time reserved x wall time; dollars from the node type's price):",
             f"  {cost.trials} trials: {cost.total.text()}",
             f"  saved by ASHA (upper bound): {cost.asha_epochs_not_run} trial-epochs not run, "
             f"{cost.asha_saved.text()}"]
    if cost.retune_saved is not None:
        lines.append(f"  saved by retuning only the starred cells ({cost.retune_trials} retune "
                     f"trials ran): {cost.retune_saved.text()}")
    return "\n".join(lines)


def runs_from_mlflow(client: Any, experiment_id: str, parent_run_id: str) -> list[RunCost]:
    """Every child run of the parent with the cost metrics its trial logged."""
    out, token = [], None
    while True:
        page = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                                  max_results=1000, page_token=token)
        for run in page:
            m, tags, params = run.data.metrics, run.data.tags, run.data.params
            if "gpu_seconds" not in m and "cpu_seconds" not in m:
                continue  # a trial still running, or one that never started
            out.append(RunCost(
                cell=tags.get("cell_id", ""), status=tags.get("status", ""),
                retune_of=tags.get("retune_of") or None,
                epochs_run=int(m.get("stopped_at_epoch", m.get("epoch", 0))),
                epoch_budget=int(params.get("epochs", 0) or 0),
                gpu_seconds=float(m.get("gpu_seconds", 0.0)),
                cpu_seconds=float(m.get("cpu_seconds", 0.0)), cost_usd=m.get("cost_usd")))
        token = page.token
        if not token:
            return out
