"""One model of a sweep's results: trials, their status, each cell's chosen trial, the marks.

Results are read at both ends of a sweep: the console summary and the retunes from Ray's
ResultGrid as the grid ends, Table 1 and Figure 2 from MLflow at any time later. Both build the
same ``TrialResult`` (``from_tune_result`` here, ``mlflow_runs.trial_result``); every consumer
then picks a cell's trial with ``select`` (the paper's model selection) and writes it with
``marks``, and the tracker tags runs with ``status_of``. One rule each, so the console,
Table 1, Figure 2 and the MLflow tags cannot disagree.

Statuses: finished (ran to its final report: test accuracy at the best validation epoch),
stopped (the scheduler stopped it; the sweep then scores its best-validation state on test from
its checkpoint, orchestrator.driver.stopped_scores), diverged, error (failed after its
retries), running / interrupted (MLflow only: a sweep still running or killed).

Seeds: a cell run with several seeds has one trial per seed; its table value is the mean (and
sd) over them (``CellOutcome.shown``), unless a retune replaced the cell.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.results.stats import mean_sd
from trainables.cell import Cell
from trainables.config import TrialConfig

FINISHED, STOPPED, DIVERGED, ERROR = "finished", "stopped", "diverged", "error"
RUNNING, INTERRUPTED = "running", "interrupted"
STATUSES = (FINISHED, STOPPED, DIVERGED, ERROR, RUNNING, INTERRUPTED)

MARK_RETUNED = "*"
MARK_STOPPED = "†"
MARK_DIVERGED = "‡"
MARK_FAILED = "✗"
MARK_BEST = "◆"
MARK_TIED = "≈"
LEGEND = (f"{MARK_RETUNED} retuned with a smaller learning rate; "
          f"{MARK_STOPPED}k stopped early by the scheduler after k epochs (its test accuracy is "
          f"that of its best-validation state); {MARK_DIVERGED} diverged; {MARK_FAILED} failed "
          f"after its retries; {MARK_BEST} best test accuracy of its (benchmark, LLM) group, "
          f"{MARK_TIED} statistically indistinguishable from it (paired test on per-problem "
          f"test correctness: exact McNemar, or paired bootstrap over seeds, p >= 0.05)")


def is_final_report(metrics: Mapping[str, Any]) -> bool:
    """The trial's own last report (Ray marks an ASHA-stopped trial done too; the loop's final
    report is recognised by its final keys, docs/ARCHITECTURE.md)."""
    return "best_epoch" in metrics or "test_acc" in metrics


def status_of(last: Mapping[str, Any], *, failed: bool, diverged: bool) -> str:
    """A trial's status from its last report (the rule every consumer uses)."""
    if failed:
        return ERROR
    if diverged:
        return DIVERGED
    return FINISHED if is_final_report(last) else STOPPED


@dataclass(frozen=True)
class TrialResult:
    """What one trial ended with; accuracies are fractions in [0, 1]."""

    cell: Cell
    status: str
    best_val_acc: float | None
    """Best validation accuracy reported (None: the trial never finished an epoch)."""
    test_acc: float | None
    """Test accuracy at the best epoch (None unless the trial ran to its end)."""
    epochs_run: int = 0
    retune_of: str | None = None
    """Cell id this trial re-tuned (None: a grid trial)."""
    lr: float | None = None
    trainable_fraction: float | None = None
    history: tuple[tuple[int, float], ...] = ()
    """(epoch, best_val_acc) per report: the retune rule compares cells at equal epochs."""
    time_s: float = 0.0
    error: str | None = None
    run_id: str = ""
    """MLflow run id, or the Tune trial id for results read from Ray."""
    name: str = ""
    config: TrialConfig | None = None
    """The whole trial config (results read from Ray; None from MLflow)."""
    seed: int | None = None
    """The trial's seed (a cell run with --seeds N has N trials)."""

    @property
    def retuned(self) -> bool:
        return self.retune_of is not None

    @property
    def diverged(self) -> bool:
        return self.status == DIVERGED

    @property
    def failed(self) -> bool:
        return self.status == ERROR

    @property
    def stopped(self) -> bool:
        return self.status == STOPPED

    @property
    def accuracy(self) -> tuple[float | None, bool]:
        """(accuracy, from_val): test accuracy, else the best validation accuracy (stopped)."""
        if self.test_acc is not None:
            return self.test_acc, False
        return self.best_val_acc, self.best_val_acc is not None

    def best_at(self, epoch: int) -> float | None:
        """Best validation accuracy up to ``epoch`` (None if nothing was reported by then)."""
        values = [v for e, v in self.history if e <= epoch]
        return max(values) if values else None


def selection_key(trial: TrialResult) -> tuple:
    """The paper's model selection among a cell's trials (grid trial, retunes, seeds): best
    validation accuracy; a diverged or failed trial loses to any that is neither; on a tie the
    grid trial stays (a retune must beat it to replace it)."""
    usable = trial.status not in (DIVERGED, ERROR)
    best = trial.best_val_acc if trial.best_val_acc is not None else -1.0
    return usable, best, not trial.retuned


def select(trials: Sequence[TrialResult]) -> TrialResult:
    """The trial that stands for its cell (first of equals: grid order)."""
    if not trials:
        raise ValueError("select() needs at least one trial")
    return max(trials, key=selection_key)


def marks(trial: TrialResult, *, markdown: bool = False) -> str:
    """The marks of a trial's table entry (LEGEND); the star escaped for markdown."""
    return _marks([trial], markdown)


def _marks(trials: Sequence[TrialResult], markdown: bool) -> str:
    trial = trials[0]
    text = ""
    if trial.retuned:
        text += ("\\" if markdown else "") + MARK_RETUNED
    stopped = [str(t.epochs_run) for t in trials if t.stopped]
    if stopped:
        text += MARK_STOPPED + "/".join(stopped)
    if trial.diverged:
        text += MARK_DIVERGED
    if trial.failed:
        text += MARK_FAILED
    return text


@dataclass(frozen=True)
class CellOutcome:
    """A cell and its trials; ``chosen`` (by ``select``) is what tables and fronts show."""

    cell: Cell
    trials: tuple[TrialResult, ...]

    @property
    def chosen(self) -> TrialResult:
        return select(self.trials)

    @property
    def shown(self) -> tuple[TrialResult, ...]:
        """The trials the cell's value is the mean of: the chosen retune alone, else every grid
        trial of the cell (one per seed), the chosen one first."""
        chosen = self.chosen
        if chosen.retuned:
            return (chosen,)
        return (chosen, *(t for t in self.trials if not t.retuned and t is not chosen))

    def mean_sd(self, metric: str) -> tuple[float | None, float | None]:
        """Mean and sd (None for one seed) over ``shown`` of ``test_acc`` or ``best_val_acc``;
        (None, None) when one of them lacks it."""
        values = [getattr(t, metric) for t in self.shown]
        if not values or any(v is None for v in values):
            return None, None
        return mean_sd(values)

    def marks(self, *, markdown: bool = False) -> str:
        """The marks of the cell's entry: its chosen trial's, stopped epochs of every seed."""
        return _marks(self.shown, markdown)


def outcomes(trials: Sequence[TrialResult]) -> list[CellOutcome]:
    """One CellOutcome per cell, in the order cells first appear."""
    by_cell: dict[str, list[TrialResult]] = {}
    for t in trials:
        by_cell.setdefault(t.cell.id, []).append(t)
    return [CellOutcome(group[0].cell, tuple(group)) for group in by_cell.values()]


def from_tune_result(result: Any) -> TrialResult:
    """A Ray Tune ``Result`` of one trial (grid or retune)."""
    from orchestrator.driver.tuner import trial_config  # the Ray boundary: the flat dict, parsed once
    config = TrialConfig.from_dict(trial_config(result.config))
    metrics = result.metrics or {}
    frame = result.metrics_dataframe
    history: tuple = ()
    if frame is not None and "epoch" in frame and "best_val_acc" in frame:
        pairs = frame[["epoch", "best_val_acc"]].dropna()
        history = tuple((int(e), float(v)) for e, v in pairs.itertuples(index=False))
    error = None if result.error is None else f"{type(result.error).__name__}: {result.error}"
    status = status_of(metrics, failed=error is not None, diverged=bool(metrics.get("diverged")))
    return TrialResult(
        cell=config.cell, status=status, best_val_acc=metrics.get("best_val_acc"),
        test_acc=metrics.get("test_acc") if status == FINISHED else None,
        epochs_run=int(metrics.get("epoch") or 0), retune_of=config.retune_of, lr=config.lr,
        trainable_fraction=metrics.get("trainable_fraction"), history=history,
        time_s=float(metrics.get("time_total_s") or 0.0), error=error,
        run_id=str(metrics.get("trial_id", "")), name=config.cell_id, config=config,
        seed=config.seed)
