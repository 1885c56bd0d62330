"""Table 1, Figure 2 and learning curves of a sweep, read back from MLflow.

Everything comes from the tracking store (params, metrics, tags of the sweep's runs), so the
report can be rebuilt any time without Ray or the sweep's files:

    python -m orchestrator.results.report --experiment NAME [--tracking-uri URI] [--out DIR]

The files are written to ``--out`` (default ``reports/<experiment>``) and logged as artifacts
(``report/``) of the sweep's parent run. The sweep calls ``write_report`` when it ends.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from orchestrator.driver.names import UnsafeName, state_dir, under
from orchestrator.driver.options import SweepOptions
from orchestrator.results.categories import write_categories
from orchestrator.results.figures import Curve, Point, accuracy_vs_fraction, learning_curves
from orchestrator.results.model import TrialResult
from orchestrator.results.predictions import category_metrics, correctness_from_mlflow
from orchestrator.results.table1 import Table1, build_table1, write_table1
from orchestrator.tracking.mlflow_runs import TAG_PARENT, TAG_ROLE, trial_result
from orchestrator.tracking.outbox import OUTBOX_DIR, TrackingOutbox
from orchestrator.tracking.tracker import resolve_tracking_uri


class ReportError(RuntimeError):
    """The report cannot be made (unknown experiment, no trial runs); the message says which."""


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _trials(runs: list[Run]) -> list[TrialResult]:
    """The trial runs among ``runs``; a run without a valid cell id (a trial whose config was
    rejected) has no place in a table and is left out."""
    trials = []
    for run in runs:
        if run.data.tags.get(TAG_ROLE) == "trial":
            try:
                trials.append(trial_result(run))
            except ValueError:
                continue
    return trials


def load_trials(client: MlflowClient, experiment_name: str,
                parent_run_id: str | None = None) -> tuple[str, list[TrialResult]]:
    """The sweep's parent run id (default: the latest) and its trial runs."""
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None or exp.lifecycle_stage != "active":
        known = [e.name for e in client.search_experiments(max_results=20)]
        raise ReportError(f"no MLflow experiment named {experiment_name!r}; known: "
                          f"{', '.join(known) or 'none'}")
    if parent_run_id is None:
        parents = _search_all(client, exp.experiment_id, f"tags.`{TAG_ROLE}` = 'parent'")
        if not parents:
            raise ReportError(f"experiment {experiment_name!r} holds no sweep (no parent run "
                              f"tagged {TAG_ROLE}=parent); is it a sweep's experiment?")
        parent_run_id = parents[0].info.run_id
    trials = _trials(_search_all(client, exp.experiment_id,
                                 f"tags.`{TAG_PARENT}` = '{parent_run_id}'"))
    if not trials:
        raise ReportError(f"experiment {experiment_name!r}: sweep run {parent_run_id} has no "
                          f"trial runs yet; nothing to report")
    order = {cell_id: i for i, cell_id in enumerate(t.cell.id for t in trials)}
    return parent_run_id, sorted(trials, key=lambda t: (t.cell.group_id, order[t.cell.id],
                                                        t.run_id))


def figure_points(trials: list[TrialResult], table: Table1) -> list[Point]:
    """One point per trial that has an accuracy and a trainable fraction; a trial whose cell
    Table 1 fills with another run (a grid run a retune replaced, a retune that lost, a seed
    not chosen) is drawn faint and kept off the Pareto front, so figure and table agree."""
    shown = {entry.chosen.run_id for entry in table.entries.values()}
    points = []
    for t in trials:
        acc, from_val = t.accuracy
        if acc is not None and t.trainable_fraction:
            points.append(Point(t.cell.group_id, t.cell.peft, t.trainable_fraction, 100.0 * acc,
                                from_val, t.run_id not in shown))
    return points


def trial_curves(client: MlflowClient, trials: list[TrialResult]) -> list[Curve]:
    curves = []
    for t in trials:
        history = sorted(client.get_metric_history(t.run_id, "val_acc"), key=lambda m: m.step)
        if history:
            curves.append(Curve(t.cell.group_id, t.cell.peft, t.name,
                                tuple(m.step for m in history),
                                tuple(100.0 * m.value for m in history)))
    return curves


@dataclass(frozen=True)
class ReportFiles:
    out_dir: Path
    table_md: Path
    table_csv: Path
    cells_csv: Path
    figure2: Path
    curves: Path
    parent_run_id: str
    n_trials: int
    categories_md: Path | None = None
    """table1_categories.md (ScienceQA leaderboard categories), when any run has them."""


def _default_out(experiment_name: str) -> Path:
    """reports/<experiment>, proven to stay under reports/ (an experiment named '..' would
    otherwise write the report into the working directory itself)."""
    try:
        return under("reports", re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment_name),
                     what="report directory")
    except UnsafeName as err:
        raise ReportError(f"{err}; pass --out") from None


def write_report(experiment_name: str, tracking_uri: str | None = None,
                 out_dir: Path | None = None, parent_run_id: str | None = None,
                 log_artifacts: bool = True, intervals: bool = False) -> ReportFiles:
    """Write Table 1 (md + csv; with the runs' predictions: intervals and paired tests, the
    intervals also in the markdown with ``intervals``), the category breakdown, Figure 2 and
    the learning curves; log them to the parent run."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise ReportError(f"no tracking store at {uri} (the file does not exist); pass "
                          f"--tracking-uri or run from the sweep's directory")
    client = MlflowClient(tracking_uri=uri)
    parent_run_id, trials = load_trials(client, experiment_name, parent_run_id)
    out = Path(out_dir) if out_dir is not None else _default_out(experiment_name)
    out.mkdir(parents=True, exist_ok=True)
    table = build_table1(trials, correctness_from_mlflow(client))
    table_md, table_csv, cells_csv = write_table1(table, out, intervals)
    categories = write_categories(table, lambda t: category_metrics(client, t.run_id), out)
    figure2, curves = out / "figure2_accuracy_vs_fraction.png", out / "learning_curves.png"
    accuracy_vs_fraction(figure_points(trials, table)).savefig(figure2, dpi=120)
    learning_curves(trial_curves(client, trials)).savefig(curves, dpi=120)
    if log_artifacts:
        client.log_artifacts(parent_run_id, str(out), "report")
    return ReportFiles(out, table_md, table_csv, cells_csv, figure2, curves, parent_run_id,
                       len(trials), categories[0] if categories else None)


def sync_outbox(experiment_name: str, tracking_uri: str | None, storage: str,
                cache_dir: str) -> None:
    """Write what a sweep's tracking outbox holds (orchestrator.tracking.outbox); ReportError if the
    store still does not take it."""
    try:
        local = storage if "://" in storage else str(Path(storage).expanduser().resolve())
        directory = state_dir(local, experiment_name, cache_dir) / OUTBOX_DIR
    except UnsafeName as err:
        raise ReportError(str(err)) from None
    box = TrackingOutbox(MlflowClient(resolve_tracking_uri(tracking_uri)), directory)
    left = box.pending
    if not box.flush():
        raise ReportError(f"the tracking store still does not answer ({box.last_error[:200]}); "
                          f"{box.pending} updates stay in {directory}")
    print(f"wrote {left} pending MLflow updates from {directory}" if left
          else f"nothing pending in {directory}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.results.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True, help="MLflow experiment (= sweep name)")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    parser.add_argument("--out", type=Path, default=None, help="default: reports/<experiment>")
    parser.add_argument("--parent-run-id", default=None, help="default: the latest sweep run")
    parser.add_argument("--no-log-artifacts", action="store_true",
                        help="do not log the files to the parent run")
    parser.add_argument("--intervals", action="store_true",
                        help="also show each cell's 95%% interval in table1.md (always in "
                             "table1_cells.csv)")
    parser.add_argument("--sync", action="store_true",
                        help="first write the MLflow updates a sweep kept while the tracking "
                             "store was unreachable (its tracking-outbox), then the report")
    parser.add_argument("--storage", default=SweepOptions.storage,
                        help=f"with --sync: the sweep's --storage (default {SweepOptions.storage})")
    parser.add_argument("--cache-dir", default=SweepOptions.cache_dir,
                        help="with --sync and a cloud --storage: the sweep's --cache-dir")
    args = parser.parse_args(argv)
    try:
        if args.sync:
            sync_outbox(args.experiment, args.tracking_uri, args.storage, args.cache_dir)
        files = write_report(args.experiment, args.tracking_uri, args.out, args.parent_run_id,
                             log_artifacts=not args.no_log_artifacts, intervals=args.intervals)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(files.table_md.read_text())
    print(f"{files.n_trials} trials; files in {files.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
