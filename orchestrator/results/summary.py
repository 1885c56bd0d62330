"""The end of a sweep on the console: counts, the best cell per group, Table 1 twice.

Why these numbers: "best cell" per group is chosen by best validation accuracy (the paper's
model selection); Table 1 shows test accuracy in every cell (a trial ASHA stopped is scored on
test from its best-validation checkpoint, marked with the epochs it trained) and, given the
trials' predictions, which cells a paired test cannot tell apart from the best test accuracy of
their group. Validation and test numbers are two separate tables. Both are
``orchestrator.results.table1`` over the results model (``orchestrator.results.model``), the
same the report draws from MLflow.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from orchestrator.results.model import (
    FINISHED,
    LEGEND,
    MARK_BEST,
    MARK_RETUNED,
    MARK_STOPPED,
    MARK_TIED,
    CellOutcome,
    TrialResult,
    outcomes,
)
from orchestrator.results.table1 import Correctness, Table1, build_table1, text


def best_per_group(trials: Sequence[TrialResult]) -> dict[tuple[str, str], CellOutcome]:
    """The cell with the highest best validation accuracy (of its chosen trial) per group."""
    best: dict[tuple[str, str], CellOutcome] = {}
    for outcome in outcomes(trials):
        chosen = outcome.chosen
        if chosen.best_val_acc is None or chosen.failed:
            continue
        group = outcome.cell.group
        if group not in best or chosen.best_val_acc > best[group].chosen.best_val_acc:
            best[group] = outcome
    return best


def _counts(cells: list[CellOutcome], retunes: Sequence[Any], wall_s: float) -> str:
    chosen = [c.chosen for c in cells]
    done = sum(1 for t in chosen if t.status == FINISHED)
    tested = sum(1 for c in cells if c.mean_sd("test_acc")[0] is not None)
    return (f"{len(cells)} cells: {done} ran to the end, "
            f"{sum(1 for t in chosen if t.stopped)} stopped early by ASHA ({MARK_STOPPED}), "
            f"{sum(1 for t in chosen if t.diverged)} diverged, "
            f"{sum(1 for t in chosen if t.failed)} failed; {len(retunes)} retuned "
            f"({MARK_RETUNED}); {tested} of {len(cells)} with a test accuracy; "
            f"wall time {wall_s:.0f} s")


def _best_lines(trials: Sequence[TrialResult], names: Callable[[str], str]) -> list[str]:
    lines = []
    for (bench, llm), outcome in sorted(best_per_group(trials).items()):
        t = outcome.chosen
        test = "-" if t.test_acc is None else f"{100 * t.test_acc:.1f}"
        lines.append(f"  {names(bench)} ({bench}) / {names(llm)} ({llm}): "
                     f"{t.cell.row_label} r{t.cell.peft.rank}  val {100 * t.best_val_acc:.1f}  "
                     f"test {test}")
    return lines


def _tied_lines(table: Table1, names: Callable[[str], str]) -> list[str]:
    """Per group: the best test accuracy and the cells a paired test cannot tell from it."""
    groups: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for key, st in table.stats.items():
        entry = table.entries[key]
        label = f"{entry.cell.row_label} r{entry.cell.peft.rank}"
        best, tied = groups.get(entry.cell.group, ("", []))
        if st.best_in_group:
            best = f"{label} {100 * st.mean:.1f}"
        elif st.indistinguishable:
            tied.append(f"{label} {100 * st.mean:.1f} (p={st.versus_best.p_value:.2g})")
        groups[entry.cell.group] = (best, tied)
    return [f"  {names(b)} / {names(llm)}: {MARK_BEST} {best}; {MARK_TIED} "
            f"{', '.join(tied) or 'none'}" for (b, llm), (best, tied) in sorted(groups.items())]


def format_zero_shot(trials: Sequence[TrialResult], names: Callable[[str], str]) -> list[str]:
    """Zero-shot test accuracy of each pretrained stand-in (recorded in its manifest) beside the
    best fine-tuned test accuracy of its group, so the gain from fine-tuning is visible."""
    from trainables.defaults import default_init
    from trainables.pretrained import recorded_zero_shot

    lines = []
    cells = outcomes(trials)
    for bench, llm in sorted({c.cell.group for c in cells}):
        chosen = [c.chosen for c in cells if c.cell.group == (bench, llm)]
        inits = {t.config.init if t.config is not None else default_init(llm) for t in chosen}
        zero = recorded_zero_shot(llm, bench) if inits == {"pretrained"} else None
        if zero is None:
            continue
        tests = [t.test_acc for t in chosen if t.test_acc is not None]
        best = f"{100 * max(tests):.1f}" if tests else "-"
        lines.append(f"  {names(bench)} ({bench}) / {names(llm)} ({llm}): zero-shot "
                     f"{100 * zero['test']:.1f} (chance {100 * zero['chance_test']:.1f}), "
                     f"best fine-tuned {best}")
    if lines:
        lines = ["", "zero-shot test accuracy (%) of the pretrained stand-ins, no fine-tuning "
                 "(trainables/assets/pretrained/*.json):", *lines]
    return lines


def format_summary(trials: Sequence[TrialResult], retunes: Sequence[Any], targets: Any,
                   tracking: str, wall_s: float, correctness: Correctness | None = None) -> str:
    """Everything the user needs at the end of a sweep, in one block. ``trials``: the grid's
    and the retunes' (each cell shows its chosen trial); ``retunes``: orchestrator.driver.retune."""
    names = targets.display_name
    table = build_table1(trials, correctness)
    lines = ["", "=" * 30 + " sweep summary " + "=" * 30,
             _counts(outcomes(trials), retunes, wall_s), "",
             "best cell per group (by best validation accuracy):", *_best_lines(trials, names),
             "", f"marks: {LEGEND}",
             "", "best validation accuracy (%):", text(table, "val", names),
             "", "Table 1: test accuracy (%) at the best validation epoch:",
             text(table, "table1", names), *format_zero_shot(trials, names)]
    if table.stats:
        lines += ["", "best test accuracy per group and the cells indistinguishable from it "
                  "(paired test, p >= 0.05):", *_tied_lines(table, names)]
    if retunes:
        lines += ["", "retuned cells (*):"]
        lines += [f"  {r.describe()}" for r in retunes]
    info = json.loads(tracking) if tracking.startswith("{") else {}
    lines += ["", f"MLflow: {tracking}"]
    uri = info.get("tracking_uri")
    if uri:
        where = f"(experiment {info.get('experiment')!r}, one child run per trial)"
        if uri.startswith(("http://", "https://")):
            lines.append(f"  browse: {uri}  {where}")
        else:  # a local store: serve it on the loopback interface only
            lines.append(f"  browse: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 "
                         f"--port 5000  {where}")
    return "\n".join(lines)
