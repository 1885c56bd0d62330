"""The Ray Tune function trainable under a real (local) Ray: reports, checkpoints, divergence."""
import json
import os

import pytest

from trainables.tune_fn import train_trial
from trainables.vision_features import METRIC_KEYS


@pytest.mark.integration
def test_train_trial_under_ray_tune(tmp_path):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = pytest.importorskip("ray")
    from ray import tune

    space = {"method": "llm_lora", "sublayer": "all", "rank": 2, "llm": "tiny-t5", "benchmark": "synth-iconqa",
             "epochs": 3, "max_train_examples": 32, "max_eval_examples": 8, "cache_dir": str(tmp_path / "prep"),
             "lr": tune.grid_search([5e-3, 1e4])}  # a normal and an absurd learning rate
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(train_trial, {"cpu": 1}), param_space=space,
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="t", verbose=0))
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert results.num_errors == 0
    by_lr = {r.config["lr"]: r for r in results}
    ok, diverged = by_lr[5e-3], by_lr[1e4]
    assert ok.metrics["done"] and not ok.metrics["diverged"] and 0 <= ok.metrics["test_acc"] <= 1
    assert ok.metrics["best_epoch"] in (1, 2, 3) and ok.metrics["epoch"] == 3
    with ok.checkpoint.as_directory() as ckpt:
        meta = json.loads(open(os.path.join(ckpt, "meta.json")).read())
    assert meta["epoch"] == 3 and meta["config"]["lr"] == 5e-3
    assert diverged.metrics["diverged"] is True and diverged.metrics["done"] is True


def test_unknown_key_fails_before_training():
    with pytest.raises(ValueError, match="unknown trial config key"):
        train_trial({"method": "both_lora", "rank": 2, "lr_typo": 1e-3})


def test_restarted_trial_resumes_from_the_ray_checkpoint(tmp_path, monkeypatch):
    """Ray hands a restarted trial its last checkpoint; the trial continues from that epoch and
    reports what an uninterrupted trial reports (Ray's session calls are replaced by recorders)."""
    import shutil

    from ray import tune

    config = {"method": "both_lora", "rank": 2, "llm": "tiny-t5", "benchmark": "synth-iconqa", "epochs": 3,
              "max_train_examples": 16, "max_eval_examples": 8, "cache_dir": str(tmp_path / "prep"), "seed": 3}
    reports, kept = [], tmp_path / "kept"

    def record(metrics, checkpoint=None):
        bookkeeping = ("samples_per_s", "epoch_time_s", "checkpoint_mb", "peak_memory_gib", *METRIC_KEYS)
        reports.append({k: v for k, v in metrics.items() if k not in bookkeeping})
        if metrics["epoch"] == 1:
            shutil.copytree(checkpoint.path, kept)

    monkeypatch.setattr(tune, "report", record)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    train_trial(config)
    whole, reports[:] = list(reports), []
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(kept)))
    train_trial(config)
    assert [r["epoch"] for r in reports] == [2, 3]
    assert reports == whole[1:]
