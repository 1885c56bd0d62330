"""The report reads a sweep back from MLflow: Table 1, Figure 2 and the learning curves.

Runs are written here through MlflowClient in the layout orchestrator.tracking.mlflow_runs logs (the
contract the report reads), so these tests need no Ray; test_mlflow_server covers the path from
a real sweep.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from orchestrator.results.figures import Point, accuracy_vs_fraction, pareto_front
from orchestrator.results.report import ReportError, figure_points, load_trials, main, write_report
from orchestrator.results.table1 import build_table1
from trainables.cell import Cell
from trainables.methods import PeftSetup

BENCH, LLM = "synth-scienceqa", "tiny-t5"


class Sweep:
    """A sweep's parent run and a helper that logs trial runs the way the tracker does."""

    def __init__(self, tmp_path: Path, name: str = "sweep-r") -> None:
        self.uri = f"sqlite:///{tmp_path}/mlflow.db"
        self.client = MlflowClient(self.uri)
        self.exp = self.client.create_experiment(name, str(tmp_path / "art"))
        self.parent = self.client.create_run(self.exp, run_name="sweep",
                                             tags={"sweep.role": "parent"}).info.run_id

    def trial(self, method: str, sublayer: str, rank: int, best_val: float,
              test: float | None, fraction: float, status: str = "finished",
              retune_of: str | None = None, benchmark: str = BENCH, adapter: str = "lora") -> str:
        cell = Cell(benchmark, LLM, PeftSetup(method, sublayer, rank, adapter)).id
        tags = {"mlflow.parentRunId": self.parent, "sweep.role": "trial", "cell_id": cell,
                "group": f"{benchmark}|{LLM}", "status": status}
        if retune_of:
            tags["retune_of"] = retune_of
        run_id = self.client.create_run(self.exp, run_name=cell, tags=tags).info.run_id
        params = dict(method=method, sublayer=sublayer, rank=rank, llm=LLM, benchmark=benchmark)
        metrics = [Metric("val_acc", best_val - 0.1 + 0.05 * e, 0, e) for e in (1, 2)]
        finals = {"best_val_acc": best_val, "trainable_fraction": fraction,
                  "retuned": bool(retune_of), "epoch": 2}
        if test is not None:
            finals["test_acc"] = test
        metrics += [Metric(k, float(v), 0, 2) for k, v in finals.items()]
        self.client.log_batch(run_id, metrics=metrics,
                              params=[Param(k, str(v)) for k, v in params.items()])
        return run_id


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An initialised store, copied per test (creating one costs seconds of migrations)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, empty_store) -> Path:
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return tmp_path


@pytest.fixture
def sweep(store) -> Sweep:
    s = Sweep(store)
    s.trial("baseline", "none", 0, 0.40, 0.38, 0.30)
    s.trial("llm_lora", "all", 1, 0.60, 0.5912, 0.31)
    s.trial("llm_lora", "all", 2, 0.66, 0.6543, 0.32)
    s.trial("qformer_lora", "ffn", 1, 0.55, None, 0.01, status="stopped")
    bad = s.trial("qformer_lora", "ffn", 2, 0.10, None, 0.02, status="diverged")
    retune = s.trial("qformer_lora", "ffn", 2, 0.57, 0.5611, 0.02,
                     retune_of=f"{BENCH}|{LLM}|qformer_lora/ffn|r2")
    s.client.set_tag(bad, "replaced_by", retune)
    return s


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_table1_numbers_equal_the_runs_metrics(sweep, tmp_path):
    files = write_report("sweep-r", sweep.uri, tmp_path / "out")
    table = {r["method"]: r for r in rows(files.table_csv)}
    assert table["baseline/none"][f"{BENCH} no LoRA"] == "38.00"
    assert table["llm_lora/all"][f"{BENCH} r1"] == "59.12"
    assert table["llm_lora/all"][f"{BENCH} r2"] == "65.43"
    # stopped and (here) never scored on test: no number, never its validation accuracy
    stopped = table["qformer_lora/ffn"]
    assert stopped[f"{BENCH} r1"] == "" and stopped[f"{BENCH} r1 marks"] == "†2"
    assert (stopped[f"{BENCH} r1 status"], stopped[f"{BENCH} r1 epochs"]) == ("stopped", "2")
    # the retune replaced the diverged run
    assert table["qformer_lora/ffn"][f"{BENCH} r2"] == "56.11"
    md = files.table_md.read_text()
    assert "| llm_lora/all | tiny-t5 |  | 59.12 | **65.43** |" in md  # best of the row bold
    assert "55.00" not in md and "–†2" in md and "56.11\\*" in md and "10.00" not in md
    cells = {(c["method"], c["rank"]): c for c in rows(files.cells_csv)}
    assert (cells[("qformer_lora/ffn", "1")]["test_acc"], cells[("qformer_lora/ffn", "1")]
            ["best_val_acc"]) == ("", "55.00")
    assert cells[("qformer_lora/ffn", "2")]["retuned"] == "1"


def test_a_diverged_run_loses_its_cell_even_with_the_higher_accuracy(store, tmp_path):
    s = Sweep(store)
    cell = f"{BENCH}|{LLM}|llm_lora/all|r4"
    s.trial("llm_lora", "all", 4, 0.90, None, 0.03, status="diverged")  # val before it blew up
    s.trial("llm_lora", "all", 4, 0.50, 0.48, 0.03, retune_of=cell)
    s.trial("llm_lora", "all", 8, 0.70, None, 0.05, status="diverged")  # alone: still shown
    files = write_report("sweep-r", s.uri, tmp_path / "out")
    cells = {c["rank"]: c for c in rows(files.cells_csv)}
    assert (cells["4"]["test_acc"], cells["4"]["status"], cells["4"]["retuned"]) == ("48.00", "finished", "1")
    assert (cells["8"]["test_acc"], cells["8"]["status"]) == ("", "diverged")
    assert "48.00\\*" in files.table_md.read_text() and "| –‡ |" in files.table_md.read_text()


def test_table1_and_figure2_separate_adapters(sweep, tmp_path):
    sweep.trial("qformer_lora", "ffn", 1, 0.62, 0.61, 0.012, adapter="dora")
    files = write_report("sweep-r", sweep.uri, tmp_path / "out")
    table = {r["method"]: r for r in rows(files.table_csv)}
    assert table["qformer_lora/ffn"][f"{BENCH} r1 marks"] == "†2"  # the plain LoRA cell, stopped
    assert table["qformer_lora/ffn dora"][f"{BENCH} r1"] == "61.00"
    methods = [r["method"] for r in rows(files.table_csv)]
    assert methods.index("qformer_lora/ffn dora") == methods.index("qformer_lora/ffn") + 1
    cells = {c["cell_id"]: c for c in rows(files.cells_csv)}
    assert cells[f"{BENCH}|{LLM}|qformer_lora/ffn|r1|dora"]["adapter"] == "dora"
    _, trials = load_trials(sweep.client, "sweep-r")
    fig = accuracy_vs_fraction(figure_points(trials, build_table1(trials)))
    labels = [c.get_label() for c in fig.axes[0].collections]
    assert "qformer_lora/ffn dora" in labels and "qformer_lora/ffn" + " (best val acc: stopped)" in labels
    markers = {c.get_label(): c.get_paths()[0].vertices.shape for c in fig.axes[0].collections}
    assert markers["qformer_lora/ffn dora"] != markers["qformer_lora/ffn (best val acc: stopped)"]


def test_report_files_are_logged_to_the_parent_run(sweep, tmp_path):
    files = write_report("sweep-r", sweep.uri, tmp_path / "out")
    logged = {a.path for a in sweep.client.list_artifacts(sweep.parent, "report")}
    assert {f"report/{p.name}" for p in (files.table_md, files.table_csv, files.figure2,
                                         files.curves)} <= logged
    assert files.figure2.stat().st_size > 10_000 and files.curves.stat().st_size > 10_000


def test_figure2_shows_one_point_per_trial(sweep):
    _, trials = load_trials(sweep.client, "sweep-r")
    fig = accuracy_vs_fraction(figure_points(trials, build_table1(trials)))
    offsets = [c.get_offsets() for ax in fig.axes for c in ax.collections]
    assert sum(len(o) for o in offsets) == len(trials) == 6


def test_two_losing_retunes_leave_the_grid_run_solid_and_on_the_front(store, tmp_path):
    s = Sweep(store)
    cell = f"{BENCH}|{LLM}|qformer_lora/ffn|r2"
    s.trial("baseline", "none", 0, 0.40, 0.38, 0.30)
    grid = s.trial("qformer_lora", "ffn", 2, 0.60, 0.59, 0.02)
    # both lost on validation; the second scores higher on test, which must not matter
    low = s.trial("qformer_lora", "ffn", 2, 0.30, 0.29, 0.02, retune_of=cell)
    high_test = s.trial("qformer_lora", "ffn", 2, 0.50, 0.64, 0.02, retune_of=cell)
    files = write_report("sweep-r", s.uri, tmp_path / "out")
    table = {r["method"]: r for r in rows(files.table_csv)}
    assert table["qformer_lora/ffn"][f"{BENCH} r2"] == "59.00"
    assert "59.00\\*" not in files.table_md.read_text()  # not starred: no retune replaced it
    _, trials = load_trials(s.client, "sweep-r")
    points = figure_points(trials, build_table1(trials))
    assert len(points) == len(trials) == 4  # every trial has an accuracy and a fraction
    points = {t.run_id: p for t, p in zip(trials, points)}
    assert not points[grid].superseded  # drawn solid: it is the value Table 1 shows
    assert points[low].superseded and points[high_test].superseded
    front = pareto_front([p for p in points.values() if not p.superseded])
    assert [(p.fraction, p.accuracy) for p in front] == [(0.02, 59.0)]  # the baseline: more params, lower


def test_pareto_front_keeps_only_undominated_trials():
    peft = PeftSetup("llm_lora", "all", 1)
    pts = [Point("g", peft, f, a, False, False) for f, a in
           [(0.01, 50.0), (0.02, 48.0), (0.03, 60.0), (0.30, 59.0), (0.5, 61.0)]]
    assert [(p.fraction, p.accuracy) for p in pareto_front(pts)] == [(0.01, 50.0), (0.03, 60.0),
                                                                       (0.5, 61.0)]


def test_unknown_experiment_is_a_clear_error(sweep, capsys):
    with pytest.raises(ReportError, match="no MLflow experiment named 'nope'; known: .*sweep-r"):
        write_report("nope", sweep.uri)
    assert main(["--experiment", "nope", "--tracking-uri", sweep.uri]) == 2
    assert "error: no MLflow experiment named 'nope'" in capsys.readouterr().err


def test_empty_experiment_is_a_clear_error(store, tmp_path):
    s = Sweep(store, "empty")
    with pytest.raises(ReportError, match="has no trial runs yet"):
        write_report("empty", s.uri, tmp_path / "out")
    s.client.create_experiment("not-a-sweep")
    with pytest.raises(ReportError, match="holds no sweep"):
        write_report("not-a-sweep", s.uri, tmp_path / "out")


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="no tracking store at"):
        write_report("x", f"sqlite:///{tmp_path}/none.db")
    assert not (tmp_path / "none.db").exists()  # the report never creates a store
