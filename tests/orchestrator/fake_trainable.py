"""A fast stand-in for trainables.tune_fn.train_trial, for orchestration tests.

It parses the config exactly as a real trial does (TrialConfig.from_dict: unknown keys fail),
makes exactly the reports trainables.loop makes (same keys and types per kind of report: first,
later, final, diverged; test_fake_trainable.py holds it to that), keeps a checkpoint per epoch
and resumes from one, but trains nothing: accuracy follows from the config,
so tests know the answer. One cell diverges at its default lr (qformer_lora/ffn at rank 4) and
recovers below it, which exercises the retune phase. FAKE_TRIAL_SLEEP_S slows epochs down;
FAKE_TRIAL_LOG (a file) gets one line per trial start and per trial end, so tests can tell
whether a finished trial ran again; FAKE_TRIAL_FAIL_ONCE (a directory) makes every trial raise
once at epoch 2 (a marker file per cell remembers it), to exercise Tune's retries;
FAKE_TRIAL_PLACEMENT_DIR (a directory) gets one JSON file per trial start with Ray's own view of
where it runs: the node's IP and the resources Ray assigned it (placement tests).
A finished trial's last checkpoint holds a predictions.parquet, as the loop's does;
``fake_trial.score_stopped`` scores a stopped one from its checkpoint the way
trainables.rescore does for a real trial (orchestrator.driver.stopped_scores uses it).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from trainables.config import TrialConfig
from trainables.defaults import default_lr
from trainables.predictions import SplitScores, predictions_table, write_predictions
from trainables.vision_features import METRIC_KEYS as VIT_CACHE_KEYS

BONUS = {"baseline": 0.0, "qformer_lora": 0.05, "llm_lora": 0.1, "both_lora": 0.08}
GROUP_BASE = {"synth-scienceqa": 0.5, "synth-iconqa": 0.2}


def diverges(cfg: TrialConfig) -> bool:
    """The one planted divergent cell: qformer_lora/ffn r4 at (or above) its default lr."""
    return (cfg.method, cfg.sublayer, cfg.rank) == ("qformer_lora", "ffn", 4) and \
        cfg.lr >= default_lr(cfg.method, cfg.llm)


def val_acc(cfg: TrialConfig, epoch: int) -> float:
    """Higher rank and more epochs are better; groups differ by a constant."""
    base = GROUP_BASE.get(cfg.benchmark, 0.3)
    return round(base + BONUS[cfg.method] + 0.01 * cfg.rank + 0.03 * min(epoch, 4), 4)


CATEGORIES = {"synth-scienceqa": ("IMG", "TXT")}
"""test_acc/<category> keys the real loop reports per benchmark (the synth ScienceQA stand-in's
context categories; IconQA has none)."""


def epoch_report(epoch: int, *, train_loss: float, val: float, best: float, lr: float,
                 seconds: float) -> dict[str, Any]:
    """The keys every non-diverged epoch report of trainables.loop carries."""
    return {"epoch": epoch, "train_loss": train_loss, "lr": lr, "samples_per_s": 100.0,
            "diverged": False, "val_acc": val, "best_val_acc": best,
            "val_gold_nll": round(2.0 - val, 4), "val_choice_nll": round(1.0 - val, 4),
            "epoch_time_s": seconds, "peak_memory_gib": 0.5, **dict.fromkeys(VIT_CACHE_KEYS, 0.0)}


def param_report(trainable: int, total: int, lora_qformer: int, lora_llm: int) -> dict[str, Any]:
    """What the first report adds: parameter accounting (ParamReport.as_metrics) and the
    batch settings the trial ran with (RunSettings.metrics)."""
    return {"trainable_params": trainable, "total_params": total,
            "micro_batch_size": 4, "grad_accum_steps": 1, "eval_batch_size_used": 32,
            "activation_checkpointing_on": 0, "est_peak_memory_gib": 0.5,
            "trainable_fraction": trainable / total, "fraction_of_baseline": trainable / 1000,
            "qformer_trainable_fraction": lora_qformer / total,
            "lora_params": lora_qformer + lora_llm, "lora_params_qformer": lora_qformer,
            "lora_params_llm": lora_llm}


def final_report(benchmark: str, test_acc: float, best_epoch: int) -> dict[str, Any]:
    """What the last report of a trial that ran to its end adds."""
    return {"test_acc": test_acc, "test_gold_nll": round(2.0 - test_acc, 4),
            "test_choice_nll": round(1.0 - test_acc, 4),
            **{f"test_acc/{c}": test_acc for c in CATEGORIES.get(benchmark, ())},
            "best_epoch": best_epoch, "done": True}


def diverged_report(epoch: int, *, best: float, lr: float, seconds: float) -> dict[str, Any]:
    """The one report of the epoch a trial diverged in (it carries no checkpoint)."""
    return {"epoch": epoch, "train_loss": float("nan"), "lr": lr, "samples_per_s": 100.0,
            "diverged": True, "val_acc": 0.0, "best_val_acc": max(best, 0.0),
            "epoch_time_s": seconds, "done": True}


def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    """tune.report with a checkpoint holding ``state`` (None: no checkpoint, as on divergence);
    checkpoint_mb is added exactly when a checkpoint is, as the real loop does."""
    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "state.json").write_text(json.dumps(state))
        if "test_acc" in metrics:  # the final report: its checkpoint holds the predictions
            write_predictions(fake_predictions(metrics["test_acc"]), Path(tmp))
        metrics["checkpoint_mb"] = 0.001
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def fake_trial(config: dict[str, Any]) -> None:
    cfg = TrialConfig.from_dict(config)
    sleep = float(os.environ.get("FAKE_TRIAL_SLEEP_S", "0"))
    start, best, best_epoch = 1, 0.0, 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = json.loads(Path(d, "state.json").read_text())
        if state.get("final"):  # a finished trial restored: re-report, train nothing (as the loop)
            tune.report(state["final"])
            return
        start, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
    log(f"start {cfg.cell_id} epoch={start}")
    record_placement(cfg)
    for epoch in range(start, cfg.epochs + 1):
        time.sleep(sleep)
        if diverges(cfg) and epoch >= 2:
            log(f"end {cfg.cell_id}")
            report(diverged_report(epoch, best=best, lr=cfg.lr, seconds=sleep), None)
            return
        acc = 0.1 if diverges(cfg) else val_acc(cfg, epoch)
        if acc > best:
            best, best_epoch = acc, epoch
        metrics = epoch_report(epoch, train_loss=1.0 / epoch, val=acc, best=best, lr=cfg.lr,
                               seconds=sleep)
        if epoch == 1 and start == 1:
            metrics.update(param_report(1000 + cfg.rank, 10_000, cfg.rank, 0))
        last = epoch == cfg.epochs
        if last:
            metrics.update(final_report(cfg.benchmark, best - 0.01, best_epoch))
        fail_dir = os.environ.get("FAKE_TRIAL_FAIL_ONCE")
        marker = Path(fail_dir or ".", cfg.cell_id.replace("|", "_").replace("/", "_"))
        if fail_dir and epoch == 2 and not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError(f"planted failure of {cfg.cell_id} at epoch 2")
        if last:  # before the final report: Tune may end the trial as soon as it arrives
            log(f"end {cfg.cell_id}")
        report(metrics, {"epoch": epoch, "best": best, "best_epoch": best_epoch,
                         "final": dict(metrics) if last else None})
        if last:
            return


N_TEST = 20


def fake_predictions(test_acc: float):
    """A predictions table of N_TEST test problems, the first round(acc * N_TEST) right."""
    right = round(test_acc * N_TEST)
    pids = tuple(f"p{i}" for i in range(N_TEST))
    picked = tuple(0 if i < right else 1 for i in range(N_TEST))
    return predictions_table([SplitScores("test", pids, (0,) * N_TEST, picked,
                                          tuple((0.5, 1.0) for _ in pids))])


def score_stopped(config: dict[str, Any], checkpoint_dir: Path, out_dir: Path,
                  device: str = "cpu") -> dict[str, Any]:
    """trainables.rescore.score_stopped for the fake's checkpoints: test = best val - 0.01."""
    cfg = TrialConfig.from_dict(config)
    state = json.loads(Path(checkpoint_dir, "state.json").read_text())
    metrics = final_report(cfg.benchmark, round(state["best"] - 0.01, 4), state["best_epoch"])
    write_predictions(fake_predictions(metrics["test_acc"]), Path(out_dir))
    log(f"scored {cfg.cell_id}")
    del metrics["done"]
    return {**metrics, "best_val_acc": state["best"]}


fake_trial.score_stopped = score_stopped


def record_placement(cfg: TrialConfig) -> None:
    """FAKE_TRIAL_PLACEMENT_DIR/<cell>.json: the node and resources Ray says this trial holds."""
    where = os.environ.get("FAKE_TRIAL_PLACEMENT_DIR")
    if where:
        import ray
        seen = {"cell": cfg.cell_id, "node_ip": ray.util.get_node_ip_address(),
                "resources": ray.get_runtime_context().get_assigned_resources()}
        name = cfg.cell_id.replace("|", "_").replace("/", "_")
        Path(where, f"{name}-{os.getpid()}-{time.monotonic_ns()}.json").write_text(json.dumps(seen))


def log(line: str) -> None:
    path = os.environ.get("FAKE_TRIAL_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
