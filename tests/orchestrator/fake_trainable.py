"""A fast stand-in for trainables.tune_fn.train_trial, for orchestration tests.

It parses the config exactly as a real trial does (TrialConfig.from_dict: unknown keys fail),
reports the documented keys each epoch (docs/ARCHITECTURE.md "Reports a trial makes"), keeps a
checkpoint per epoch and resumes from one, but trains nothing: accuracy follows from the config,
so tests know the answer. One cell diverges at its default lr (qformer_lora/ffn at rank 4) and
recovers below it, which exercises the retune phase. FAKE_TRIAL_SLEEP_S slows epochs down;
FAKE_TRIAL_LOG (a file) gets one line per trial start and per trial end, so tests can tell
whether a finished trial ran again; FAKE_TRIAL_FAIL_ONCE (a directory) makes every trial raise
once at epoch 2 (a marker file per cell remembers it), to exercise Tune's retries.
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


def fake_trial(config: dict[str, Any]) -> None:
    cfg = TrialConfig.from_dict(config)
    sleep = float(os.environ.get("FAKE_TRIAL_SLEEP_S", "0"))
    start, best = 1, 0.0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = json.loads(Path(d, "state.json").read_text())
        start, best = state["epoch"] + 1, state["best"]
    log(f"start {cfg.cell_id} epoch={start}")
    for epoch in range(start, cfg.epochs + 1):
        time.sleep(sleep)
        div = diverges(cfg) and epoch >= 2
        acc = 0.1 if diverges(cfg) else val_acc(cfg, epoch)
        best = max(best, acc)
        metrics: dict[str, Any] = {
            "epoch": epoch, "train_loss": float("nan") if div else 1.0 / epoch, "val_acc": acc,
            "best_val_acc": best, "lr": cfg.lr, "samples_per_s": 100.0, "epoch_time_s": sleep,
            "diverged": div}
        if epoch == 1:
            metrics.update(trainable_params=1000 + cfg.rank, total_params=10_000,
                           trainable_fraction=0.1, fraction_of_baseline=1.0,
                           lora_params={"qformer": cfg.rank, "llm": 0})
        last = div or epoch == cfg.epochs
        if last:
            metrics.update(test_acc=None if div else best - 0.01, best_epoch=epoch, done=True)
        fail_dir = os.environ.get("FAKE_TRIAL_FAIL_ONCE")
        marker = Path(fail_dir or ".", cfg.cell_id.replace("|", "_").replace("/", "_"))
        if fail_dir and epoch == 2 and not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError(f"planted failure of {cfg.cell_id} at epoch 2")
        if last:  # before the final report: Tune may end the trial as soon as it arrives
            log(f"end {cfg.cell_id}")
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "state.json").write_text(json.dumps({"epoch": epoch, "best": best}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        if last:
            return


def log(line: str) -> None:
    path = os.environ.get("FAKE_TRIAL_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
