"""Table 1 with seeds, intervals and the paired test; the report reads predictions from MLflow."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from orchestrator.driver.targets import resolve_targets
from orchestrator.results.model import FINISHED, STOPPED, TrialResult
from orchestrator.results.report import write_report
from orchestrator.results.summary import format_summary
from orchestrator.results.table1 import build_table1, markdown, text
from trainables.cell import Cell
from trainables.methods import PeftSetup
from trainables.predictions import SplitScores, predictions_table, write_predictions

BENCH, LLM = "synth-scienceqa", "tiny-t5"
PIDS = [f"p{i:02d}" for i in range(20)]


def right(n: int) -> dict[str, bool]:
    """The first n of the 20 test problems right."""
    return {p: i < n for i, p in enumerate(PIDS)}


def trial(method: str, rank: int, seed: int, test: float, status: str = FINISHED,
          epochs: int = 4) -> TrialResult:
    cell = Cell(BENCH, LLM, PeftSetup(method, "all" if method != "baseline" else "none", rank))
    return TrialResult(cell, status, test + 0.01, test, epochs, seed=seed,
                       run_id=f"{method}-{rank}-{seed}")


# llm_lora r2: seeds at 15/20 and 16/20 (the best); r1: 14/20 (close); baseline: 4/20 (far).
TRIALS = [trial("llm_lora", 2, 0, 0.75), trial("llm_lora", 2, 1, 0.80, STOPPED, epochs=2),
          trial("llm_lora", 1, 0, 0.70), trial("baseline", 0, 0, 0.20)]
RIGHT = {"llm_lora-2-0": right(15), "llm_lora-2-1": right(16), "llm_lora-1-0": right(14),
         "baseline-0-0": right(4)}


def correctness(t: TrialResult):
    return RIGHT.get(t.run_id)


def test_seeds_give_mean_sd_and_marks_of_the_paired_test():
    table = build_table1(TRIALS, correctness)
    row = next(r for r in table.rows if r[0][0] == "llm_lora")
    assert table.value(row, (BENCH, 2)) == pytest.approx(77.5)
    assert table.sd(row, (BENCH, 2)) == pytest.approx(100 * 0.05 / math.sqrt(2))
    # the stopped seed's epochs are shown; best of the group; r1 not distinguishable from it
    assert table.entry_text(row, (BENCH, 2)) == "77.50±3.54†2◆"
    assert table.entry_text(row, (BENCH, 1)) == "70.00≈"
    base = next(r for r in table.rows if r[0][0] == "baseline")
    assert table.entry_text(base, (BENCH, 0)) == "20.00"  # p < 0.05: no mark
    st = table.stats[(row, (BENCH, 2))]
    assert (st.n_seeds, st.ci_method) == (2, "bootstrap")
    assert table.stats[(row, (BENCH, 1))].versus_best.method == "paired-bootstrap"
    assert "[" in markdown(table, intervals=True) and "[" not in markdown(table)


def test_without_predictions_there_are_no_stat_marks():
    table = build_table1(TRIALS)
    assert table.stats == {}
    assert "◆" not in text(table, "table1")


def test_the_summary_names_the_indistinguishable_cells():
    summary = format_summary(TRIALS, [], resolve_targets([], [], []), "{}", 1.0, correctness)
    assert "◆ llm_lora/all r2 77.5; ≈ llm_lora/all r1 70.0 (p=" in summary


# -- from MLflow ----------------------------------------------------------------------------
def log_trial(client: MlflowClient, exp: str, parent: str, tmp: Path, method: str, rank: int,
              n_right: int, categories: dict[str, float]) -> None:
    cell = Cell(BENCH, LLM, PeftSetup(method, "all" if rank else "none", rank)).id
    run = client.create_run(exp, run_name=cell, tags={
        "mlflow.parentRunId": parent, "sweep.role": "trial", "cell_id": cell, "status": "finished",
        "group": f"{BENCH}|{LLM}"}).info.run_id
    metrics = {"best_val_acc": n_right / 20, "test_acc": n_right / 20, "epoch": 3,
               **{f"test_acc/{k}": v for k, v in categories.items()}}
    client.log_batch(run, metrics=[Metric(k, float(v), 0, 3) for k, v in metrics.items()],
                     params=[Param("method", method), Param("rank", str(rank)), Param("seed", "0")])
    scores = SplitScores("test", tuple(PIDS), (0,) * 20, tuple(0 if i < n_right else 1 for i in range(20)),
                         tuple((0.1, 0.2) for _ in PIDS))
    folder = tmp / run
    client.log_artifact(run, str(write_predictions(predictions_table([scores]), folder)), "predictions")


def test_report_reads_predictions_and_categories_from_mlflow(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp = client.create_experiment("sweep-s", str(tmp_path / "art"))
    parent = client.create_run(exp, tags={"sweep.role": "parent"}).info.run_id
    log_trial(client, exp, parent, tmp_path, "llm_lora", 2, 15, {"TXT": 0.7, "IMG": 0.75})
    log_trial(client, exp, parent, tmp_path, "baseline", 0, 3, {"TXT": 0.1, "IMG": 0.15})
    files = write_report("sweep-s", f"sqlite:///{tmp_path}/m.db", tmp_path / "out",
                         log_artifacts=False)
    with files.cells_csv.open() as f:
        cells = {c["method"]: c for c in csv.DictReader(f)}
    best, base = cells["llm_lora/all"], cells["baseline/none"]
    # Wilson 15/20 = [53.13, 88.81] (scipy.stats.binomtest(15, 20).proportion_ci("wilson"))
    assert (best["ci_low"], best["ci_high"], best["ci_method"]) == ("53.13", "88.81", "wilson")
    assert best["best_in_group"] == "1" and best["marks"] == "◆"
    # 12 problems only the best got right: exact McNemar p = 2 / 2**12
    assert float(base["p_vs_best"]) == pytest.approx(2 / 4096, rel=1e-3) and base["indistinguishable_from_best"] == "0"
    assert files.categories_md is not None
    with (files.out_dir / "table1_categories.csv").open() as f:
        cats = {r["method"]: r for r in csv.DictReader(f)}
    assert (cats["llm_lora/all"]["TXT"], cats["baseline/none"]["IMG"]) == ("70.00", "15.00")
    assert "NAT" not in cats["baseline/none"]
