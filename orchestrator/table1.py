"""Table 1 of the paper from a sweep's trials: rows = method x LLM, columns = rank x benchmark.

A cell shows test accuracy (%) of the cell's trial. When a retune replaced a trial, the
retune's value is shown and starred, as in the paper. A trial stopped early by the scheduler
has no test score: its best validation accuracy is shown, marked, so it is never mistaken for
a test score. Several trials in one cell (e.g. seeds) are resolved by the best validation
accuracy, the paper's model-selection rule.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator.figures import ROW_METHODS
from trainables.vocab import BENCHMARKS, PRESETS

MARK_RETUNED = "*"
MARK_STOPPED = "†"
MARK_DIVERGED = "‡"
LEGEND = (f"Marks: \\{MARK_RETUNED} retuned with a smaller learning rate; {MARK_STOPPED} "
          f"stopped early by the scheduler: best validation accuracy, no test score; "
          f"{MARK_DIVERGED} diverged. "
          f"Bold: best of the row per benchmark. Test accuracy in %.")


class TrialLike(Protocol):
    """What Table 1 needs of a trial (orchestrator.report.Trial)."""

    run_id: str
    row_method: str
    llm: str
    benchmark: str
    rank: int
    status: str
    retuned: bool
    best_val_acc: float | None

    @property
    def accuracy(self) -> tuple[float | None, bool]: ...


@dataclass(frozen=True)
class Cell:
    value: float  # percent
    from_val: bool  # best validation accuracy of a stopped trial, not a test score
    retuned: bool
    status: str
    run_id: str
    runs_in_cell: int

    def text(self) -> str:
        """Value and marks for markdown (the star escaped so it is not read as emphasis)."""
        marks = ("\\" + MARK_RETUNED if self.retuned else "") \
            + (MARK_STOPPED if self.from_val else "") \
            + (MARK_DIVERGED if self.status == "diverged" else "")
        return f"{self.value:.2f}{marks}"


Row = tuple[str, str]  # (method/sublayer, llm)
Column = tuple[str, int]  # (benchmark, rank)


@dataclass(frozen=True)
class Table1:
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[Row, Column], Cell]

    def best_in_row(self, row: Row, benchmark: str) -> float | None:
        """The row's best value on a benchmark, when the row has several values to compare."""
        values = [c.value for (r, (b, _)), c in self.cells.items() if r == row and b == benchmark]
        return max(values) if len(values) > 1 else None


def _rank_key(items: Sequence[str], order: Sequence[str]) -> list[str]:
    return sorted(items, key=lambda x: (order.index(x) if x in order else len(order), x))


def build_table1(trials: Sequence[TrialLike]) -> Table1:
    by_cell: dict[tuple[Row, Column], list[TrialLike]] = {}
    for t in trials:
        if t.accuracy[0] is None:
            continue
        by_cell.setdefault(((t.row_method, t.llm), (t.benchmark, t.rank)), []).append(t)
    cells = {}
    for key, group in by_cell.items():
        # The paper's selection rule over the grid trial and its retunes: best validation
        # accuracy, a diverged run losing to any that did not diverge. A retune that did not
        # beat the original leaves the original in the table (as the sweep's summary does).
        best = max(group, key=lambda t: (t.status != "diverged", t.best_val_acc or 0.0,
                                         t.accuracy[0]))
        value, from_val = best.accuracy
        cells[key] = Cell(value, from_val, best.retuned, best.status, best.run_id, len(group))
    llms = _rank_key({r[1] for r, _ in cells}, PRESETS)
    methods = _rank_key({r[0] for r, _ in cells}, ROW_METHODS)
    rows = [(m, llm) for m in methods for llm in llms if any(r == (m, llm) for r, _ in cells)]
    columns = [(b, rank) for b in _rank_key({c[0] for _, c in cells}, BENCHMARKS)
               for rank in sorted({c[1] for _, c in cells if c[0] == b})]
    return Table1(rows, columns, cells)


def column_label(column: Column) -> str:
    benchmark, rank = column
    return f"{benchmark} {'no LoRA' if rank == 0 else f'r{rank}'}"


def markdown(table: Table1) -> str:
    header = ["method", "LLM"] + [column_label(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        texts = []
        for col in table.columns:
            cell = table.cells.get((row, col))
            text = cell.text() if cell else ""
            if cell and cell.value == table.best_in_row(row, col[0]):
                text = f"**{text}**"
            texts.append(text)
        lines.append("| " + " | ".join([row[0], row[1], *texts]) + " |")
    return "\n".join(lines) + f"\n\n{LEGEND}\n"


def write_table1(table: Table1, out: Path) -> tuple[Path, Path, Path]:
    """table1.md, table1.csv (same layout, plain numbers) and table1_cells.csv (one line per
    cell with its status, retune flag and run id, for scripts)."""
    md, wide, long = out / "table1.md", out / "table1.csv", out / "table1_cells.csv"
    md.write_text(markdown(table))
    with wide.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "llm"] + [column_label(c) for c in table.columns])
        for row in table.rows:
            cells = [table.cells.get((row, col)) for col in table.columns]
            writer.writerow([*row, *(f"{c.value:.2f}" if c else "" for c in cells)])
    with long.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "llm", "benchmark", "rank", "accuracy", "metric", "status",
                         "retuned", "runs_in_cell", "run_id"])
        for (row, col), c in sorted(table.cells.items()):
            writer.writerow([*row, *col, f"{c.value:.2f}", "best_val_acc" if c.from_val else
                             "test_acc", c.status, int(c.retuned), c.runs_in_cell, c.run_id])
    return md, wide, long
