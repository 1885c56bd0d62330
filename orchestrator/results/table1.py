"""Table 1 of the paper from a sweep's trials: rows = method x LLM, columns = benchmark x rank.

A cell shows the test accuracy (%) of the cell's chosen trial (``results.select``: best
validation accuracy over the grid trial and its retunes), or, for a cell run with several seeds,
the mean +- sd over its seeds. A retune's value is starred, as in the paper. A trial the
scheduler stopped early is scored on test from its best-validation checkpoint and marked with
the epochs it trained; validation and test numbers never share a table (the console's
validation table is a table of its own). With the trials' per-problem predictions
(``correctness``), each cell also gets a 95% interval and a paired test against the best cell
of its (benchmark, LLM) group (orchestrator.results.cell_stats). Adapter variants (DoRA, rsLoRA,
an alpha rule other than the paper's) are rows of their own next to their plain-LoRA row.

The same table is written as markdown/CSV (``write_table1``) and printed at the end of a sweep
(``text``, with the paper's names), from the same ``Table1`` object.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.results.cell_stats import CellScores, CellStats, cell_stats
from orchestrator.results.model import LEGEND, MARK_BEST, MARK_TIED, CellOutcome, TrialResult, outcomes
from trainables.methods import PeftSetup, row_order
from trainables.vocab import BENCHMARKS, PRESETS

Row = tuple[tuple[str, str, str, str], str]  # ((method, sublayer, adapter, alpha), llm)
Column = tuple[str, int]  # (benchmark, rank)
METRICS = {"table1": "test_acc", "val": "best_val_acc"}
"""table1: test accuracy (only: a cell without a test score is empty); val: best validation."""
NO_VALUE = "–"
"""Shown for a cell without the table's number (a diverged cell has no test score)."""
Correctness = Callable[[TrialResult], Mapping[str, bool] | None]
"""A trial's per-problem test correctness (pid -> right), None when it has no predictions."""


def _row_key(peft: PeftSetup) -> tuple[str, str, str, str]:
    return peft.method, peft.sublayer, peft.adapter, peft.alpha


@dataclass(frozen=True)
class Table1:
    rows: list[Row]
    columns: list[Column]
    entries: dict[tuple[Row, Column], CellOutcome]
    labels: dict[Row, str]
    """Row -> its method label (method/sublayer plus the adapter variant)."""
    stats: dict[tuple[Row, Column], CellStats] = field(default_factory=dict)
    """Interval and paired test per cell (cells whose trials all have predictions)."""

    def value(self, row: Row, column: Column, metric: str = "table1") -> float | None:
        """Percent: the cell's mean over its seeds of METRICS[metric]."""
        entry = self.entries.get((row, column))
        mean = None if entry is None else entry.mean_sd(METRICS[metric])[0]
        return None if mean is None else 100.0 * mean

    def sd(self, row: Row, column: Column, metric: str = "table1") -> float | None:
        entry = self.entries.get((row, column))
        sd = None if entry is None else entry.mean_sd(METRICS[metric])[1]
        return None if sd is None else 100.0 * sd

    def best_in_row(self, row: Row, benchmark: str, metric: str = "table1") -> float | None:
        """The row's best value on a benchmark, when the row has several values to compare."""
        values = [v for c in self.columns if c[0] == benchmark
                  if (v := self.value(row, c, metric)) is not None]
        return max(values) if len(values) > 1 else None

    def stat_marks(self, row: Row, column: Column) -> str:
        """MARK_BEST / MARK_TIED of the paired test (test accuracy only)."""
        st = self.stats.get((row, column))
        if st is None:
            return ""
        return MARK_BEST if st.best_in_group else MARK_TIED if st.indistinguishable else ""

    def entry_text(self, row: Row, column: Column, metric: str = "table1", *,
                   markdown: bool = False, digits: int = 2, intervals: bool = False) -> str:
        entry = self.entries.get((row, column))
        value = self.value(row, column, metric)
        if entry is None:
            return ""
        if value is None:  # e.g. diverged, or stopped without a test score: marks, no number
            return NO_VALUE + entry.marks(markdown=markdown)
        sd = self.sd(row, column, metric)
        text = f"{value:.{digits}f}" + ("" if sd is None else f"±{sd:.{digits}f}")
        text += entry.marks(markdown=markdown)
        if metric == "table1":
            text += self.stat_marks(row, column)
            st = self.stats.get((row, column))
            if intervals and st is not None:
                text += f" [{100 * st.ci_low:.1f}, {100 * st.ci_high:.1f}]"
        return text


def _order(items: set[str], order: Sequence[str]) -> list[str]:
    return sorted(items, key=lambda x: (order.index(x) if x in order else len(order), x))


def build_table1(trials: Sequence[TrialResult], correctness: Correctness | None = None) -> Table1:
    """Table 1 of ``trials`` (trials without any accuracy yet are left out); ``correctness``
    adds intervals and the paired tests (module docstring)."""
    entries: dict[tuple[Row, Column], CellOutcome] = {}
    labels: dict[Row, str] = {}
    pefts: dict[tuple[str, str, str, str], PeftSetup] = {}
    for outcome in outcomes([t for t in trials if t.accuracy[0] is not None]):
        cell = outcome.cell
        key = _row_key(cell.peft)
        row: Row = (key, cell.llm)
        entries[(row, (cell.benchmark, cell.peft.rank))] = outcome
        labels[row] = cell.row_label
        pefts[key] = cell.peft
    llms = _order({row[1] for row, _ in entries}, PRESETS)
    keys = sorted(pefts, key=lambda k: row_order(pefts[k]))
    rows = [(k, llm) for k in keys for llm in llms if any(r == (k, llm) for r, _ in entries)]
    columns = [(b, rank) for b in _order({c[0] for _, c in entries}, BENCHMARKS)
               for rank in sorted({c[1] for _, c in entries if c[0] == b})]
    stats = _stats(entries, correctness) if correctness is not None else {}
    return Table1(rows, columns, entries, labels, stats)


def _stats(entries: dict[tuple[Row, Column], CellOutcome],
           correctness: Correctness) -> dict[tuple[Row, Column], CellStats]:
    """cell_stats over the cells whose shown trials all have a test score and predictions."""
    cells = []
    for key, entry in entries.items():
        if entry.mean_sd("test_acc")[0] is None:
            continue
        seeds = [correctness(t) for t in entry.shown]
        if all(seeds):
            cells.append(CellScores(key, entry.cell.group, tuple(seeds)))
    return cell_stats(cells)


def column_label(column: Column, names: Callable[[str], str] = str) -> str:
    benchmark, rank = column
    return f"{names(benchmark)} {'no LoRA' if rank == 0 else f'r{rank}'}"


def markdown(table: Table1, intervals: bool = False) -> str:
    header = ["method", "LLM"] + [column_label(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        texts = []
        for col in table.columns:
            text = table.entry_text(row, col, markdown=True, intervals=intervals)
            value = table.value(row, col)
            if value is not None and value == table.best_in_row(row, col[0]):
                text = f"**{text}**"
            texts.append(text)
        lines.append("| " + " | ".join([table.labels[row], row[1], *texts]) + " |")
    legend = LEGEND.replace("*", "\\*", 1)
    extra = " [a, b]: 95% interval (Wilson; bootstrap over problems with seeds)." if intervals else ""
    return "\n".join(lines) + (f"\n\nMarks: {legend}. Bold: best of the row per benchmark. "
                               f"Test accuracy in %, mean±sd over seeds where a cell has several."
                               f"{extra}\n")


def text(table: Table1, metric: str, names: Callable[[str], str] = str) -> str:
    """Fixed-width console version; ``names`` maps actual presets/benchmarks to paper names."""
    width = max([len(label) for label in table.labels.values()] + [16]) + 2
    header = f"{'LLM':<12}{'method':<{width}}" + "".join(
        f"{column_label(c, names)[:17]:>19}" for c in table.columns)
    lines = [header]
    for row in table.rows:
        cells = "".join(f"{table.entry_text(row, c, metric, digits=1):>19}" for c in table.columns)
        lines.append(f"{names(row[1])[:11]:<12}{table.labels[row]:<{width}}{cells}")
    return "\n".join(lines)


def _entry_fields(table: Table1, row: Row, col: Column) -> list[str]:
    """value, sd, marks, status, epochs of one Table 1 entry (table1.csv)."""
    entry = table.entries.get((row, col))
    if entry is None:
        return [""] * 5
    value, sd = table.value(row, col), table.sd(row, col)
    return ["" if value is None else f"{value:.2f}", "" if sd is None else f"{sd:.2f}",
            entry.marks() + table.stat_marks(row, col),
            "/".join(t.status for t in entry.shown), "/".join(str(t.epochs_run) for t in entry.shown)]


CELL_COLUMNS = ["method", "llm", "benchmark", "rank", "test_acc", "test_acc_sd", "seeds",
                "ci_low", "ci_high", "ci_method", "best_in_group", "p_vs_best", "paired_test",
                "indistinguishable_from_best", "best_val_acc", "status", "epochs", "marks",
                "retuned", "runs_in_cell", "run_id", "adapter", "alpha", "cell_id"]
"""table1_cells.csv: accuracies and intervals in %, one line per cell."""


def _cell_line(table: Table1, row: Row, col: Column) -> list[object]:
    entry, st = table.entries[(row, col)], table.stats.get((row, col))
    test, sd, val = table.value(row, col), table.sd(row, col), table.value(row, col, "val")
    vs = st.versus_best if st else None
    chosen, peft = entry.chosen, entry.cell.peft
    return [table.labels[row], row[1], *col, "" if test is None else f"{test:.2f}",
            "" if sd is None else f"{sd:.2f}", len(entry.shown),
            f"{100 * st.ci_low:.2f}" if st else "", f"{100 * st.ci_high:.2f}" if st else "",
            st.ci_method if st else "", int(st.best_in_group) if st else "",
            f"{vs.p_value:.4g}" if vs else "", vs.method if vs else "",
            int(st.indistinguishable) if st else "", "" if val is None else f"{val:.2f}",
            "/".join(t.status for t in entry.shown), "/".join(str(t.epochs_run) for t in entry.shown),
            entry.marks() + table.stat_marks(row, col), int(chosen.retuned), len(entry.trials),
            chosen.run_id, peft.adapter, peft.alpha, entry.cell.id]


def write_table1(table: Table1, out: Path, intervals: bool = False) -> tuple[Path, Path, Path]:
    """table1.md, table1.csv (same layout; per column its value, sd, marks, status and epochs
    trained) and table1_cells.csv (one line per cell: CELL_COLUMNS, for scripts)."""
    md, wide, long = out / "table1.md", out / "table1.csv", out / "table1_cells.csv"
    md.write_text(markdown(table, intervals))
    with wide.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "llm"] + [f"{column_label(c)}{part}" for c in table.columns
                                             for part in ("", " sd", " marks", " status", " epochs")])
        for row in table.rows:
            writer.writerow([table.labels[row], row[1],
                             *(v for col in table.columns for v in _entry_fields(table, row, col))])
    with long.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CELL_COLUMNS)
        for row, col in sorted(table.entries, key=lambda k: (table.labels[k[0]], k[0][1], k[1])):
            writer.writerow(_cell_line(table, row, col))
    return md, wide, long
