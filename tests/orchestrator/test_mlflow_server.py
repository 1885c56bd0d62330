"""A smoke sweep tracked by a real MLflow server, checked through the server's REST API."""
from __future__ import annotations

import subprocess
import sys

import pytest
from _mlflow_server import REPO, SMOKE_CELLS, free_port, mlflow_server, rest, run_smoke_sweep

from trainables.cell import parse_cell_id

pytestmark = pytest.mark.integration

PARAMS = {"method", "sublayer", "rank", "llm", "benchmark", "lr", "epochs", "batch_size", "seed"}
EPOCH_METRICS = {"train_loss", "val_acc", "lr", "samples_per_s"}
FINAL_METRICS = {"best_val_acc", "test_acc", "trainable_params", "trainable_fraction",
                 "fraction_of_baseline", "lora_params", "best_epoch", "stopped_at_epoch",
                 "diverged", "retuned", "wall_time_s"}


@pytest.fixture(scope="module")
def tracked_sweep(tmp_path_factory):
    """(server URL, experiment id) of a finished smoke sweep."""
    workdir = tmp_path_factory.mktemp("mlflow_server")
    with mlflow_server(workdir) as url:
        done = run_smoke_sweep(url, workdir, "smoke-server")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        exp = rest(url, "experiments/get-by-name?experiment_name=smoke-server")["experiment"]
        yield url, exp["experiment_id"]


def search(url: str, exp_id: str, filter_string: str, **extra) -> list[dict]:
    body = {"experiment_ids": [exp_id], "filter": filter_string, "max_results": 1000, **extra}
    return rest(url, "runs/search", body).get("runs", [])


def as_dict(entries: list[dict]) -> dict[str, str]:
    return {e["key"]: e["value"] for e in entries}


def test_one_child_run_per_trial_under_one_parent(tracked_sweep):
    url, exp_id = tracked_sweep
    parents = search(url, exp_id, "tags.`sweep.role` = 'parent'")
    assert len(parents) == 1
    parent = parents[0]["info"]
    assert parent["status"] == "FINISHED"
    assert as_dict(parents[0]["data"]["params"])["space"] == "smoke"
    children = search(url, exp_id, f"tags.`mlflow.parentRunId` = '{parent['run_id']}'")
    assert sorted(as_dict(c["data"]["tags"])["cell_id"] for c in children) == sorted(SMOKE_CELLS)
    assert len(search(url, exp_id, "")) == 1 + len(SMOKE_CELLS)  # nothing else in the experiment
    for child in children:
        params, metrics = as_dict(child["data"]["params"]), as_dict(child["data"]["metrics"])
        assert PARAMS <= set(params), params
        assert EPOCH_METRICS | FINAL_METRICS <= set(metrics), metrics
        assert not any(k in metrics for k in ("pid", "training_iteration", "time_this_iter_s"))
        tags = as_dict(child["data"]["tags"])
        assert tags["status"] == "finished"
        cell = parse_cell_id(tags["cell_id"])  # the run name leads with what differs
        assert child["info"]["run_name"] == \
            f"{cell.row_label} r{cell.peft.rank} | {cell.benchmark} | {cell.llm}"
        history = rest(url, f"metrics/get-history?run_id={child['info']['run_id']}"
                            f"&metric_key=val_acc")["metrics"]
        assert [m["step"] for m in history] == [1, 2]  # one point per epoch, step = epoch
        files = rest(url, f"artifacts/list?run_id={child['info']['run_id']}")["files"]
        assert {f["path"] for f in files} == {"config.json", "checkpoint", "predictions"}  # via the server


def test_search_for_the_best_run_by_val_acc_returns_the_expected_trial(tracked_sweep):
    url, exp_id = tracked_sweep
    best = search(url, exp_id, "tags.`sweep.role` = 'trial'", max_results=1,
                  order_by=["metrics.best_val_acc DESC"])
    # the fake trainable: LLM LoRA gets the largest bonus, scienceqa the higher base
    assert as_dict(best[0]["data"]["tags"])["cell_id"] == "synth-scienceqa|tiny-llama|llm_lora/attn|r2"
    assert best[0]["info"]["run_name"] == "llm_lora/attn r2 | synth-scienceqa | tiny-llama"
    assert as_dict(best[0]["data"]["metrics"])["best_val_acc"] == pytest.approx(0.68)


def test_report_is_logged_on_the_parent_run(tracked_sweep):
    url, exp_id = tracked_sweep
    parent = search(url, exp_id, "tags.`sweep.role` = 'parent'")[0]["info"]["run_id"]
    files = rest(url, f"artifacts/list?run_id={parent}&path=report")["files"]
    names = {f["path"] for f in files}
    assert {"report/table1.md", "report/table1.csv", "report/figure2_accuracy_vs_fraction.png",
            "report/learning_curves.png"} <= names


def test_unreachable_tracking_uri_stops_the_sweep_before_training(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    done = run_smoke_sweep(uri, tmp_path, "smoke-unreachable")
    assert done.returncode == 2
    assert uri in done.stderr and "unreachable" in done.stderr
    results = tmp_path / "ray_results"
    assert not results.exists() or not any(results.iterdir())  # nothing was trained


def test_report_cli_on_an_unknown_experiment_is_a_clear_error(tracked_sweep, tmp_path):
    url, _ = tracked_sweep
    done = subprocess.run([sys.executable, "-m", "orchestrator.results.report", "--experiment", "nope",
                           "--tracking-uri", url, "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no MLflow experiment named 'nope'" in done.stderr and "smoke-server" in done.stderr
