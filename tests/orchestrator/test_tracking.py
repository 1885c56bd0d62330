"""MLflow tracking of a sweep: preflight errors, parent run, and one child run per Tune trial."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.costs.trial import CostBook
from orchestrator.placement.node_types import NodeType
from orchestrator.tracking.mlflow_runs import resolve_config, result_metrics
from orchestrator.tracking.tracker import SweepTracker, TrackingError, resolve_tracking_uri
from trainables.defaults import default_lr, recipe_for


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An initialised store, copied per test (creating one costs seconds of migrations)."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def store(tmp_path, empty_store) -> Path:
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return tmp_path


def tracker(tmp_path: Path, space: str = "smoke", resume: bool = False,
            name: str = "sweep-a") -> SweepTracker:
    return SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", name, space,
                        ["python", "-m", "orchestrator.sweep", "--space", space], 7, resume)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_commit() -> str:
    """What git says the checkout is at ('-dirty' with tracked changes), asked independently."""
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"  # not a git checkout: the tracker must say so, not invent a commit
    changed = subprocess.run(["git", "-C", str(repo), "diff", "HEAD", "--quiet"]).returncode
    return head + ("-dirty" if changed else "")


def children(client: MlflowClient, t: SweepTracker) -> list:
    return client.search_runs([t.experiment_id], f"tags.`mlflow.parentRunId` = '{t.parent_run_id}'")


# -- the tracking URI and preflight ---------------------------------------------------------
def test_uri_option_then_environment_then_sqlite_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5999"
    assert resolve_tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"


def test_unreachable_server_is_one_clear_error_within_seconds(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    t = SweepTracker(uri, "sweep-a", "smoke", [], 0, False)
    started = time.monotonic()
    with pytest.raises(TrackingError, match="unreachable") as err:
        t.preflight()
    assert uri in str(err.value) and "Nothing was trained" in str(err.value)
    assert time.monotonic() - started < 15


def test_missing_sqlite_directory_is_refused(tmp_path):
    t = SweepTracker(f"sqlite:///{tmp_path}/nope/mlflow.db", "sweep-a", "smoke", [], 0, False)
    with pytest.raises(TrackingError, match="does not exist or is not writable"):
        t.preflight()


def test_experiment_of_another_space_is_refused_unless_resuming(tmp_path):
    tracker(tmp_path, space="smoke").preflight()
    with pytest.raises(TrackingError, match="already holds sweep space 'smoke', not 'full_grid'"):
        tracker(tmp_path, space="full_grid").preflight()
    tracker(tmp_path, space="full_grid", resume=True).preflight()  # resuming: allowed
    tracker(tmp_path, space="smoke").preflight()  # same space again: allowed


def test_deleted_experiment_is_refused(tmp_path):
    t = tracker(tmp_path)
    t.preflight()
    t.client.delete_experiment(t.experiment_id)
    with pytest.raises(TrackingError, match="is deleted"):
        tracker(tmp_path).preflight()


# -- the parent run -------------------------------------------------------------------------
def test_parent_run_records_the_sweep_and_resume_reuses_it(tmp_path):
    t = tracker(tmp_path)
    t.preflight()
    parent = t.start()
    run = t.client.get_run(parent)
    assert run.data.params["space"] == "smoke" and run.data.params["seed"] == "7"
    assert run.data.params["command"] == "python -m orchestrator.sweep --space smoke"
    assert run.data.params["version.mlflow"] == metadata.version("mlflow")
    assert run.data.params["git_commit"] == expected_commit()
    assert run.data.params["host"] == socket.gethostname()
    # the experiment stores the sweep's runs-table view (opened by the README's UI link)
    exp = t.client.get_experiment(t.experiment_id)
    view = json.loads(exp.tags["mlflow.sharedViewState.sweep"])
    assert parent in view["searchFilter"]
    assert "metrics.`trainable_fraction`" in view["selectedColumns"]
    t.finish("KILLED")
    again = tracker(tmp_path, resume=True)
    again.preflight()
    assert again.start() == parent
    parents = t.client.search_runs([t.experiment_id], "tags.`sweep.role` = 'parent'")
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"
    assert os.path.isdir(tmp_path / "mlartifacts")  # artifacts next to the database


def test_finish_rejects_unknown_status(tmp_path):
    t = tracker(tmp_path)
    t.preflight()
    t.start()
    with pytest.raises(ValueError, match="unknown run status 'DONE'"):
        t.finish("done")


# -- what a trial's reports become ----------------------------------------------------------
def test_only_meaningful_values_become_metrics():
    result = {"epoch": 1, "train_loss": 0.5, "val_acc": 0.4, "best_val_acc": 0.4, "lr": 1e-3,
              "samples_per_s": 10.0, "epoch_time_s": 2.0, "diverged": False,
              "trainable_params": 5, "total_params": 50, "trainable_fraction": 0.1,
              "fraction_of_baseline": 0.5, "lora_params": {"qformer": 3, "llm": 2},
              "qformer_trainable_fraction": 0.02, "checkpoint_mb": 1.5,
              "test_acc": None, "pid": 123, "hostname": "node", "config": {"lr": 1e-3},
              "training_iteration": 1, "time_total_s": 3.0, "trial_id": "abc", "done": False}
    metrics = result_metrics(result)
    assert metrics == {"train_loss": 0.5, "val_acc": 0.4, "best_val_acc": 0.4, "lr": 1e-3,
                       "samples_per_s": 10.0, "epoch_time_s": 2.0, "diverged": 0.0,
                       "trainable_params": 5, "total_params": 50, "trainable_fraction": 0.1,
                       "fraction_of_baseline": 0.5, "lora_params": 5, "lora_params_qformer": 3,
                       "lora_params_llm": 2, "qformer_trainable_fraction": 0.02,
                       "checkpoint_mb": 1.5}
    flat = {"lora_params": 5, "lora_params_qformer": 3, "lora_params_llm": 2}  # ARCHITECTURE.md
    assert result_metrics(flat) == flat


def test_the_vit_cache_counters_a_trial_reports_are_logged():
    from trainables.vision_features import METRIC_KEYS
    result = {"epoch": 2, "vit_cache_hits": 96.0, "vit_cache_misses": 16.0, "vit_cache_seconds_saved": 3.5}
    assert result_metrics(result) == {k: result[k] for k in METRIC_KEYS}


def test_logged_config_is_resolved_from_the_recipe():
    cfg = resolve_config({"method": "qformer_lora", "sublayer": "ffn", "rank": 2, "llm": "tiny-t5",
                          "benchmark": "synth-iconqa", "lr": None, "epochs": None})
    recipe = recipe_for("tiny-t5")
    assert cfg["lr"] == default_lr("qformer_lora", "tiny-t5")
    assert (cfg["epochs"], cfg["batch_size"]) == (recipe.epochs, recipe.batch_size)
    assert cfg["seed"] == 0 and cfg["retune_of"] is None


# -- replaced_by: set from the retunes' results, never when a retune run is created -------------
class FakeTrial:
    """What TrialRunLogger reads of a Tune trial (no Ray needed)."""

    def __init__(self, trial_id: str, config: dict, val: float) -> None:
        self.trial_id, self.config, self.checkpoint = trial_id, config, None
        self.last_result = {"epoch": 1, "val_acc": val, "best_val_acc": val, "test_acc": val,
                            "best_epoch": 1, "done": True}


def _cell_row(trial_id: str, val: float, lr: float | None = None):
    from orchestrator.results.model import FINISHED, TrialResult
    from trainables.cell import parse_cell_id
    cell = parse_cell_id("synth-scienceqa|tiny-t5|qformer_lora/ffn|r4")
    return TrialResult(cell, FINISHED, best_val_acc=val, test_acc=val, epochs_run=1,
                       lr=lr or 5e-3, retune_of=cell.id if lr else None, run_id=trial_id)


def _log_trials(t: SweepTracker, trials: list[FakeTrial]) -> dict[str, str]:
    """Run each fake trial through the Tune callback; trial id -> its run id."""
    logger = t.callback()
    logger.setup()
    for trial in trials:
        logger.on_trial_start(0, [], trial)
        logger.on_trial_complete(0, [], trial)
    return {trial.trial_id: logger._runs[trial.trial_id].run_id for trial in trials}


def test_replaced_by_is_set_only_when_a_retune_wins_and_names_the_best(tmp_path):
    from orchestrator.driver.retune import Retune
    from orchestrator.driver.run import record_retunes

    cell = "synth-scienceqa|tiny-t5|qformer_lora/ffn|r4"
    base = {"method": "qformer_lora", "sublayer": "ffn", "rank": 4, "llm": "tiny-t5",
            "benchmark": "synth-scienceqa", "epochs": 1}
    t = tracker(tmp_path)
    t.preflight()
    t.start()
    runs = _log_trials(t, [FakeTrial("grid", base, 0.6),
                           FakeTrial("rt-a", {**base, "lr": 1e-5, "retune_of": cell}, 0.3),
                           FakeTrial("rt-b", {**base, "lr": 3e-5, "retune_of": cell}, 0.4)])

    def tag() -> str | None:
        return t.client.get_run(runs["grid"]).data.tags.get("replaced_by")

    assert tag() is None  # creating retune runs decides nothing
    grid = _cell_row("grid", 0.6)
    losing = Retune(grid, "gap", [_cell_row("rt-a", 0.3, 1e-5), _cell_row("rt-b", 0.4, 3e-5)])
    record_retunes(t, [losing])
    assert tag() is None  # two retunes that both lost: the grid run keeps its cell
    # the first-created retune is the best one: the tag names it, not the last one created
    winning = Retune(grid, "gap", [_cell_row("rt-a", 0.8, 1e-5), _cell_row("rt-b", 0.7, 3e-5)])
    record_retunes(t, [winning])
    assert tag() == runs["rt-a"]
    record_retunes(t, [losing])  # a later decision (resumed sweep) overrides the tag
    assert tag() is None


# -- a real Ray Tune run with the callback --------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.integration
def test_tune_run_logs_one_child_run_per_trial(tmp_path, ray_local):
    from _fake_sweep import expected_val_acc, run_fake_sweep, trial_config

    configs = [trial_config("baseline", "none", 0), trial_config("llm_lora", "all", 2),
               trial_config("qformer_lora", "ffn", 4, fake_stop_at=2),
               trial_config("both_lora", "all", 8, fake_diverge=True)]
    t = tracker(tmp_path)
    t.preflight()
    t.start()
    local = NodeType("local", None, gpus=0, cpus=4, max_nodes=1, usd_per_hour={"on_demand": 0.4},
                     pinned=False)
    run_fake_sweep(configs, t.callback(CostBook({"local": local}, {}, {}, "local")), tmp_path / "ray")
    bill = t.sweep_cost(retune_samples=None)
    t.finish("FINISHED")
    runs = {r.data.tags["cell_id"]: r for r in children(t.client, t)}
    assert len(runs) == 4
    # what each trial cost: 1 CPU reserved (Tune's default) x its wall time, priced per CPU
    for r in runs.values():
        m = r.data.metrics
        assert m["cpu_seconds"] == pytest.approx(m["wall_time_s"]) and m["gpu_seconds"] == 0
        assert m["cost_usd"] == pytest.approx(m["cpu_seconds"] * 0.4 / 4 / 3600)
        assert "mfu" not in m and r.data.tags["node_type"] == "local"
    # the parent run carries the totals and what stopping a trial at epoch 2 of 4 saved
    parent = t.client.get_run(t.parent_run_id).data.metrics
    stopped_run = runs["synth-scienceqa|tiny-t5|qformer_lora/ffn|r4"].data.metrics
    assert parent["total_cpu_seconds"] == pytest.approx(
        sum(r.data.metrics["cpu_seconds"] for r in runs.values()))
    assert parent["asha_trial_epochs_not_run"] == 2 == bill.asha_epochs_not_run
    assert parent["asha_saved_cost_usd"] == pytest.approx(stopped_run["cost_usd"])
    full = runs["synth-scienceqa|tiny-t5|llm_lora/all|r2"]
    recipe = recipe_for("tiny-t5")
    assert full.data.params == {"method": "llm_lora", "sublayer": "all", "rank": "2",
                                "llm": "tiny-t5", "init": "pretrained", "benchmark": "synth-scienceqa",
                                "lr": str(default_lr("llm_lora", "tiny-t5")), "epochs": "4",
                                "batch_size": str(recipe.batch_size),
                                "grad_accum": str(recipe.grad_accum), "seed": "0",
                                "adapter": "lora", "alpha": "fixed8",
                                # the recipe's frozen-weight dtype and checkpointing, resolved
                                "weight_dtype": str(recipe.weight_dtype),
                                "activation_checkpointing": "auto", "random_weights": "False"}
    m = full.data.metrics
    assert m["test_acc"] == pytest.approx(expected_val_acc(configs[1], 4) - 0.01)
    assert m["trainable_fraction"] == pytest.approx(0.0102) and m["lora_params"] == 20
    speeds = [h.value for h in t.client.get_metric_history(full.info.run_id, "samples_per_s")]
    assert len(speeds) == 4 and m["train_samples_per_s"] == pytest.approx(sum(speeds) / 4)
    assert (m["best_epoch"], m["stopped_at_epoch"], m["diverged"], m["retuned"]) == (4, 4, 0, 0)
    assert "pid" not in m and not any(k.startswith("config") for k in m)
    history = t.client.get_metric_history(full.info.run_id, "val_acc")
    assert [h.step for h in history] == [1, 2, 3, 4]
    assert full.data.tags["status"] == "finished" and full.info.status == "FINISHED"
    artifacts = {a.path for a in t.client.list_artifacts(full.info.run_id)}
    assert artifacts == {"checkpoint", "config.json", "predictions"}
    stopped = runs["synth-scienceqa|tiny-t5|qformer_lora/ffn|r4"]
    assert stopped.data.tags["status"] == "stopped" and "test_acc" not in stopped.data.metrics
    assert stopped.data.metrics["stopped_at_epoch"] == 2
    diverged = runs["synth-scienceqa|tiny-t5|both_lora/all|r8"]
    assert diverged.data.tags["status"] == "diverged" and diverged.data.metrics["diverged"] == 1
    assert all(r.data.tags["cell_id"] == name for name, r in runs.items())
    assert all(r.data.tags["group"] == "synth-scienceqa|tiny-t5" for r in runs.values())


@pytest.mark.integration
def test_resumed_tune_run_reuses_its_runs_and_retune_links_the_cell(tmp_path, ray_local):
    from _fake_sweep import make_trainable, run_fake_sweep, trial_config
    from ray import tune

    configs = [trial_config("llm_lora", "ffn", 1, fake_fail_once=str(tmp_path / "failed")),
               trial_config("qformer_lora", "all", 2)]
    t = tracker(tmp_path)
    t.preflight()
    t.start()
    grid = run_fake_sweep(configs, t.callback(), tmp_path / "ray")
    assert sum(r.error is not None for r in grid) == 1
    restored = tune.Tuner.restore(str(tmp_path / "ray" / "fake"), make_trainable(),
                                  resume_errored=True)
    assert all(r.error is None for r in restored.fit())
    runs = children(t.client, t)
    assert len(runs) == 2  # never a second run for the resumed trial
    resumed = next(r for r in runs if r.data.params["method"] == "llm_lora")
    assert resumed.data.tags["status"] == "finished" and resumed.info.status == "FINISHED"
    steps = [h.step for h in t.client.get_metric_history(resumed.info.run_id, "val_acc")]
    assert steps == [1, 2, 3, 4]  # the repeated epoch 1 was not logged twice
    # a retune of one cell, in a second Tune run of the same sweep
    cell = "synth-scienceqa|tiny-t5|qformer_lora/all|r2"
    run_fake_sweep([trial_config("qformer_lora", "all", 2, lr=1e-3, retune_of=cell)],
                   t.callback(), tmp_path / "ray", name="retune")
    runs = {r.info.run_id: r for r in children(t.client, t)}
    retune = next(r for r in runs.values() if r.data.tags.get("retune_of") == cell)
    original = next(r for r in runs.values() if r.data.tags["cell_id"] == cell
                    and "retune_of" not in r.data.tags)
    assert "replaced_by" not in original.data.tags  # set from results, by the driver
    assert retune.data.metrics["retuned"] == 1 and retune.data.params["lr"] == "0.001"
