"""A real Ray Tune sweep of a tiny trainable that reports exactly what a trial reports.

The trainable skips the model (it would cost minutes on a shared 2-core machine) but goes
through Ray Tune for real: results, checkpoints, completion, errors and restore reach the
tracking callback the way a real sweep's do. Its numbers follow from the config, so tests
know which trial must come out best.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.cloudpickle
from ray import tune


def trial_config(method: str, sublayer: str, rank: int, **extra: Any) -> dict[str, Any]:
    """A flat trial config (docs/ARCHITECTURE.md TrialConfig keys) on the tiny stand-ins."""
    return {"method": method, "sublayer": sublayer, "rank": rank, "llm": "tiny-t5",
            "benchmark": "synth-scienceqa", "lr": None, "epochs": 4, "batch_size": None,
            "seed": 0, "retune_of": None, **extra}


def expected_val_acc(config: dict[str, Any], epoch: int) -> float:
    """Validation accuracy of the fake: higher rank and more epochs are better; LLM LoRA best."""
    bonus = {"baseline": 0.0, "qformer_lora": 0.05, "llm_lora": 0.1, "both_lora": 0.08}
    return round(0.3 + bonus[config["method"]] + 0.01 * config["rank"] + 0.02 * epoch, 4)


def make_trainable():
    """The function trainable Ray Tune runs; its reports are built by fake_trainable, which
    holds them to the real loop's shape."""
    from fake_trainable import diverged_report, epoch_report, final_report, param_report, report

    def fake_trial(config: dict[str, Any]) -> None:
        stop_at = config.get("fake_stop_at") or config["epochs"]
        marker = config.get("fake_fail_once")  # a path: fail at epoch 2 the first time
        best, best_epoch = 0.0, 0
        for epoch in range(1, stop_at + 1):
            if config.get("fake_diverge") and epoch >= 2:
                report(diverged_report(epoch, best=best, lr=0.01 / epoch, seconds=0.01), None)
                return
            val = expected_val_acc(config, epoch)
            if val > best:
                best, best_epoch = val, epoch
            metrics = epoch_report(epoch, train_loss=1.0 / epoch, val=val, best=best,
                                   lr=0.01 / epoch, seconds=0.01)
            if epoch == 1:
                rank = config["rank"]
                metrics.update(param_report(1000 + 10 * rank, 100_000, 10 * rank, 0))
            if epoch == config["epochs"]:
                metrics.update(final_report(config["benchmark"], best - 0.01, best_epoch))
            if marker and epoch == 2 and not Path(marker).exists():
                Path(marker).write_text("failed once")
                raise RuntimeError("fake failure to exercise resume")
            report(metrics, {"epoch": epoch})

    return fake_trial


def run_fake_sweep(configs: list[dict[str, Any]], callback: tune.Callback,
                   storage: Path, name: str = "fake") -> tune.ResultGrid:
    """Run the configs as one Tune experiment with the tracking callback.

    Trial configs stay flat (as the real sweep's are): a grid over the index, every key drawn
    from the indexed config.
    """
    # Ray workers cannot import these test modules: ship them by value.
    import fake_trainable
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(fake_trainable)
    keys = sorted({k for c in configs for k in c})
    space: dict[str, Any] = {"trial_index": tune.grid_search(list(range(len(configs))))}
    for key in keys:
        space[key] = tune.sample_from(
            lambda config, key=key: configs[config["trial_index"]].get(key))
    tuner = tune.Tuner(
        make_trainable(),
        param_space=space,
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=2),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), callbacks=[callback],
                                  verbose=0),
    )
    return tuner.fit()


def crash_driver_when(command: list[str], cwd: Path, env: dict[str, str],
                      ready: Callable[[], bool], settle_s: float = 0.0,
                      timeout_s: float = 300.0) -> bool:
    """Start a sweep driver in its own session, wait until ``ready()`` (at most ``timeout_s``),
    give it ``settle_s`` more (e.g. for Tune's experiment-state snapshot), then SIGKILL the
    driver alone, as a crash would. Whatever Ray processes it leaves behind belong to its
    session and are killed afterwards, so nothing outlives the test. Returns whether ``ready()``
    held: the caller asserts on it after the cleanup."""
    driver = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not (was_ready := ready()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not was_ready:
            return False
        time.sleep(settle_s)
        os.kill(driver.pid, signal.SIGKILL)  # the driver only
        driver.wait(timeout=30)
        return True
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
