"""The ScienceQA leaderboard breakdown of Table 1: each cell's test accuracy per category.

ScienceQA's leaderboard reports accuracy by subject (NAT/SOC/LAN), context modality (TXT/IMG/NO)
and grade band (G1-6/G7-12) (trainables.data.categories). Every trial reports them as
``test_acc/<category>``; this table shows them for the runs Table 1 shows (mean over seeds),
one line per cell of a benchmark with categories. Written next to Table 1 as
``table1_categories.md`` / ``.csv`` when any run has category metrics.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from pathlib import Path

from orchestrator.results.model import TrialResult
from orchestrator.results.table1 import Table1, column_label
from trainables.data.categories import ORDER

CategoryMetrics = Callable[[TrialResult], Mapping[str, float]]


def category_rows(table: Table1, metrics_of: CategoryMetrics) -> tuple[list[str], list[list[str]]]:
    """(categories present, rows: method, LLM, column, test %, then % per category)."""
    found: dict[tuple, dict[str, float]] = {}
    for row in table.rows:
        for col in table.columns:
            entry = table.entries.get((row, col))
            if entry is None or table.value(row, col) is None:
                continue
            per_seed = [metrics_of(t) for t in entry.shown]
            cats = [c for c in ORDER if all(c in m for m in per_seed)]
            if cats:
                found[(row, col)] = {c: sum(m[c] for m in per_seed) / len(per_seed) for c in cats}
    present = [c for c in ORDER if any(c in v for v in found.values())]
    rows = []
    for (row, col), values in found.items():
        rows.append([table.labels[row], row[1], column_label(col), f"{table.value(row, col):.2f}",
                     *("" if c not in values else f"{100 * values[c]:.2f}" for c in present)])
    return present, rows


def write_categories(table: Table1, metrics_of: CategoryMetrics, out: Path) -> tuple[Path, Path] | None:
    """table1_categories.md and .csv, or None when no run has category metrics."""
    present, rows = category_rows(table, metrics_of)
    if not rows:
        return None
    header = ["method", "LLM", "column", "test", *present]
    md, flat = out / "table1_categories.md", out / "table1_categories.csv"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    md.write_text("\n".join(lines) + "\n\nTest accuracy (%) per ScienceQA leaderboard category: "
                  "NAT/SOC/LAN subject, TXT/IMG/NO context, G1-6/G7-12 grade (TXT and IMG "
                  "overlap, as on the leaderboard).\n")
    with flat.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return md, flat
