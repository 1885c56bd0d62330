"""The end of a sweep: one row per cell, the Table-1-shaped tables, the best cell per group.

Why these numbers: an ASHA-stopped trial never reached its test evaluation, so the cell keeps
its best-so-far validation accuracy and is marked "s@k" (stopped at epoch k). The validation
table is therefore complete for every cell and is what "best cell" is chosen by (the paper's
model selection); the test table shows test accuracy where a trial ran to its end.
A retuned cell (see orchestrator.retune) shows its best retune trial, marked "*".
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from trainables.config import TrialConfig
from trainables.methods import METHODS


@dataclass(frozen=True)
class CellResult:
    """What one trial (or, after retuning, one cell) ended with."""

    config: dict[str, Any]
    """The flat trial config it ran (lr None = the method's default)."""
    best_val_acc: float | None
    """Best validation accuracy reported (None: the trial never finished an epoch)."""
    test_acc: float | None
    """Test accuracy at the best epoch (None unless the trial ran to its end)."""
    epochs_run: int
    """Epochs the trial reported."""
    stopped_early: bool
    """ASHA stopped it (no final report, no error)."""
    diverged: bool
    """The trial reported diverged=True."""
    error: str | None
    """Error of a trial that failed after its retries, else None."""
    history: tuple[tuple[int, float], ...] = ()
    """(epoch, best_val_acc) per report: lets the retune rule compare cells at equal epochs."""
    time_s: float = 0.0
    """Trial wall time as Tune measured it (time_total_s)."""
    retuned_lr: float | None = None
    """Set when this row is a retune's best trial replacing the original (the '*' cells)."""
    trial_id: str = ""

    @property
    def cell_id(self) -> str:
        return TrialConfig.from_dict(self.config).cell_id

    @property
    def group(self) -> tuple[str, str]:
        return self.config["benchmark"], self.config["llm"]

    def best_at(self, epoch: int) -> float | None:
        """Best validation accuracy up to ``epoch`` (None if nothing was reported by then)."""
        values = [v for e, v in self.history if e <= epoch]
        return max(values) if values else None


def rows_from_results(results: Any) -> list[CellResult]:
    """One CellResult per trial of a Tune ResultGrid (in grid order)."""
    from orchestrator.tuner import trial_config
    rows = []
    for result in results:
        metrics = result.metrics or {}
        frame = result.metrics_dataframe
        history: tuple = ()
        if frame is not None and "epoch" in frame and "best_val_acc" in frame:
            pairs = frame[["epoch", "best_val_acc"]].dropna()
            history = tuple((int(e), float(v)) for e, v in pairs.itertuples(index=False))
        # Ray fills "done" itself (also for a trial ASHA stopped), so the trial's own final
        # report is recognised by its final keys (docs/ARCHITECTURE.md: test_acc, best_epoch).
        done = "best_epoch" in metrics or "test_acc" in metrics
        error = None if result.error is None else f"{type(result.error).__name__}: {result.error}"
        rows.append(CellResult(
            config=trial_config(result.config), best_val_acc=metrics.get("best_val_acc"),
            test_acc=metrics.get("test_acc") if done else None,
            epochs_run=int(metrics.get("epoch") or 0),
            stopped_early=not done and error is None and not metrics.get("diverged"),
            diverged=bool(metrics.get("diverged")), error=error, history=history,
            time_s=float(metrics.get("time_total_s") or 0.0),
            trial_id=str(metrics.get("trial_id", ""))))
    return rows


def mark(row: CellResult, value: float | None) -> str:
    """Table text of one cell: percentage with '*' (retuned), 's@k' (stopped), 'div', 'err'."""
    if row.error:
        return "err"
    text = "-" if value is None else f"{100 * value:.1f}"
    if row.retuned_lr is not None:
        text += "*"
    if row.diverged:
        text += " div"
    elif row.stopped_early:
        text += f" s@{row.epochs_run}"
    return text


def format_table(rows: list[CellResult], metric: str, names: Any) -> str:
    """Rows method x LLM, columns benchmark x rank (the shape of the paper's Table 1)."""
    benches = list(dict.fromkeys(r.config["benchmark"] for r in rows))  # grid order
    llms = sorted({r.config["llm"] for r in rows}, key=names)  # paper names: flan-t5 first
    ranks = sorted({r.config["rank"] for r in rows if r.config["rank"] > 0})
    by_key = {(r.config["benchmark"], r.config["llm"], r.config["method"], r.config["sublayer"],
               r.config["rank"]): r for r in rows}
    cols = [(b, k) for b in benches for k in ranks]
    header = f"{'LLM':<12}{'method':<24}" + "".join(f"{names(b)[:9] + ' r' + str(k):>17}" for b, k in cols)
    lines = [header]
    for llm in llms:
        for method, subs in ((m.name, m.sublayers) for m in METHODS.values()):
            for sub in subs:
                cells = []
                for b, k in cols:
                    if method == "baseline" and k != ranks[0]:
                        cells.append("")  # one baseline per benchmark, under the first rank
                        continue
                    row = by_key.get((b, llm, method, sub, 0 if method == "baseline" else k))
                    cells.append(mark(row, getattr(row, metric)) if row else "")
                if any(cells):
                    label = method if method == "baseline" else f"{method}/{sub}"
                    lines.append(f"{names(llm)[:11]:<12}{label:<24}" + "".join(f"{c:>17}" for c in cells))
    return "\n".join(lines)


def best_per_group(rows: list[CellResult]) -> dict[tuple[str, str], CellResult]:
    """The cell with the highest best validation accuracy in each (benchmark, llm) group."""
    best: dict[tuple[str, str], CellResult] = {}
    for row in rows:
        if row.best_val_acc is None or row.error:
            continue
        if row.group not in best or row.best_val_acc > best[row.group].best_val_acc:
            best[row.group] = row
    return best


def format_summary(rows: list[CellResult], retuned: list, targets: Any, tracking: str,
                   wall_s: float) -> str:
    """Everything the user needs at the end of a sweep, in one block."""
    import json
    names = targets.display_name
    done = sum(1 for r in rows if r.test_acc is not None)
    stopped = sum(1 for r in rows if r.stopped_early)
    lines = ["", "=" * 30 + " sweep summary " + "=" * 30,
             f"{len(rows)} cells: {done} ran to the end, {stopped} stopped early by ASHA (s@k), "
             f"{sum(1 for r in rows if r.diverged)} diverged, {sum(1 for r in rows if r.error)} "
             f"failed; {len(retuned)} retuned (*); wall time {wall_s:.0f} s", "",
             "best cell per group (by best validation accuracy):"]
    for (bench, llm), row in sorted(best_per_group(rows).items()):
        test = "-" if row.test_acc is None else f"{100 * row.test_acc:.1f}"
        lines.append(f"  {names(bench)} ({bench}) / {names(llm)} ({llm}): "
                     f"{row.config['method']}/{row.config['sublayer']} r{row.config['rank']}  "
                     f"val {100 * row.best_val_acc:.1f}  test {test}")
    lines += ["", "legend: * retuned lr (replaces the grid trial)   s@k stopped by ASHA at epoch k "
              "(its best-so-far numbers)   div diverged   err failed after retries",
              "", "best validation accuracy (%):", format_table(rows, "best_val_acc", names),
              "", "test accuracy (%) at the best validation epoch:",
              format_table(rows, "test_acc", names)]
    if retuned:
        lines += ["", "retuned cells (*):"]
        lines += [f"  {r.describe()}" for r in retuned]
    info = json.loads(tracking) if tracking.startswith("{") else {}
    lines += ["", f"MLflow: {tracking}"]
    if info.get("tracking_uri"):
        lines.append(f"  browse: mlflow ui --backend-store-uri {info['tracking_uri']}  "
                     f"(experiment {info.get('experiment')!r}, one child run per trial)")
    return "\n".join(lines)
