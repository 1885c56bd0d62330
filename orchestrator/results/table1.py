"""Table 1 of the paper from a sweep's trials: rows = method x LLM, columns = benchmark x rank.

A cell shows test accuracy (%) of the cell's chosen trial (``results.select``: best validation
accuracy over the grid trial, its retunes and seeds). A retune's value is starred, as in the
paper. A trial stopped early by the scheduler has no test score: its best validation accuracy
is shown, marked, so it is never mistaken for a test score. Adapter variants (DoRA, rsLoRA, an
alpha rule other than the paper's) are rows of their own next to their plain-LoRA row.

The same table is written as markdown/CSV (``write_table1``) and printed at the end of a sweep
(``text``, with the paper's names), from the same ``Table1`` object.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.results.model import LEGEND, CellOutcome, TrialResult, marks, outcomes
from trainables.methods import PeftSetup, row_order
from trainables.vocab import BENCHMARKS, PRESETS

Row = tuple[tuple[str, str, str, str], str]  # ((method, sublayer, adapter, alpha), llm)
Column = tuple[str, int]  # (benchmark, rank)
METRICS = ("table1", "val")
"""table1: test accuracy, else best val of a stopped trial (marked); val: best val accuracy."""


def _row_key(peft: PeftSetup) -> tuple[str, str, str, str]:
    return peft.method, peft.sublayer, peft.adapter, peft.alpha


def _value(trial: TrialResult, metric: str) -> float | None:
    """Percent shown for ``trial`` (METRICS)."""
    value = trial.accuracy[0] if metric == "table1" else trial.best_val_acc
    return None if value is None else 100.0 * value


@dataclass(frozen=True)
class Table1:
    rows: list[Row]
    columns: list[Column]
    entries: dict[tuple[Row, Column], CellOutcome]
    labels: dict[Row, str]
    """Row -> its method label (method/sublayer plus the adapter variant)."""

    def value(self, row: Row, column: Column, metric: str = "table1") -> float | None:
        entry = self.entries.get((row, column))
        return None if entry is None else _value(entry.chosen, metric)

    def best_in_row(self, row: Row, benchmark: str, metric: str = "table1") -> float | None:
        """The row's best value on a benchmark, when the row has several values to compare."""
        values = [v for c in self.columns if c[0] == benchmark
                  if (v := self.value(row, c, metric)) is not None]
        return max(values) if len(values) > 1 else None

    def entry_text(self, row: Row, column: Column, metric: str = "table1", *,
                   markdown: bool = False, digits: int = 2) -> str:
        entry = self.entries.get((row, column))
        value = self.value(row, column, metric)
        if entry is None or value is None:
            return ""
        return f"{value:.{digits}f}{marks(entry.chosen, markdown=markdown)}"


def _order(items: set[str], order: Sequence[str]) -> list[str]:
    return sorted(items, key=lambda x: (order.index(x) if x in order else len(order), x))


def build_table1(trials: Sequence[TrialResult]) -> Table1:
    """Table 1 of ``trials`` (trials without any accuracy yet are left out)."""
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
    return Table1(rows, columns, entries, labels)


def column_label(column: Column, names: Callable[[str], str] = str) -> str:
    benchmark, rank = column
    return f"{names(benchmark)} {'no LoRA' if rank == 0 else f'r{rank}'}"


def markdown(table: Table1) -> str:
    header = ["method", "LLM"] + [column_label(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        texts = []
        for col in table.columns:
            text = table.entry_text(row, col, markdown=True)
            if text and table.value(row, col) == table.best_in_row(row, col[0]):
                text = f"**{text}**"
            texts.append(text)
        lines.append("| " + " | ".join([table.labels[row], row[1], *texts]) + " |")
    legend = LEGEND.replace("*", "\\*", 1)
    return "\n".join(lines) + (f"\n\nMarks: {legend}. Bold: best of the row per benchmark. "
                               f"Test accuracy in %.\n")


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


def write_table1(table: Table1, out: Path) -> tuple[Path, Path, Path]:
    """table1.md, table1.csv (same layout, plain numbers) and table1_cells.csv (one line per
    cell with its status, retune flag and run id, for scripts)."""
    md, wide, long = out / "table1.md", out / "table1.csv", out / "table1_cells.csv"
    md.write_text(markdown(table))
    with wide.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "llm"] + [column_label(c) for c in table.columns])
        for row in table.rows:
            values = [table.value(row, col) for col in table.columns]
            writer.writerow([table.labels[row], row[1],
                             *("" if v is None else f"{v:.2f}" for v in values)])
    with long.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "llm", "benchmark", "rank", "accuracy", "metric", "status",
                         "retuned", "runs_in_cell", "run_id", "adapter", "alpha", "cell_id"])
        for (row, col), entry in sorted(table.entries.items(),
                                        key=lambda kv: (table.labels[kv[0][0]], kv[0][0][1],
                                                        kv[0][1])):
            chosen, peft = entry.chosen, entry.cell.peft
            writer.writerow([table.labels[row], row[1], *col, f"{table.value(row, col):.2f}",
                             "best_val_acc" if chosen.accuracy[1] else "test_acc",
                             chosen.status, int(chosen.retuned), len(entry.trials),
                             chosen.run_id, peft.adapter, peft.alpha, entry.cell.id])
    return md, wide, long
