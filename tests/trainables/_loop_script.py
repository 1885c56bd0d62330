"""The stand-in trial the loop's control tests run (test_loop_control.py, test_loop_reports.py):
a one-weight model, scripted losses and validation accuracies, the real run_trial / checkpoint /
predictions code.

Each epoch sets the model's only weight to its epoch number (1, 2, ...), so the weight a test
split is scored with says which epoch's state the loop restored: the state of epoch k gets the
first k of the 10 test problems right (test accuracy k / 10). Everything the tests expect is
written from the script, not from the loop's code.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trainables import loop
from trainables.config import TrialConfig
from trainables.scoring import ScoreResult

ANSWERS = (0, 1)
"""Two val problems, the gold answer of each; the 10 test problems' gold answer is 0."""


def loop_cfg(**over) -> TrialConfig:
    base = {"method": "qformer_lora", "sublayer": "ffn", "rank": 2, "llm": "tiny-t5",
            "benchmark": "synth-iconqa", "epochs": 3, "patience": 3, "min_epochs": 1,
            "lr": 1e-3, "seed": 1, "divergence_factor": 4.0}
    return TrialConfig.from_dict({**base, **over})


def stub_trial(cfg: TrialConfig) -> SimpleNamespace:
    model = torch.nn.Linear(1, 1, bias=False)
    val = [SimpleNamespace(pid=f"p{i}", answer_index=a) for i, a in enumerate(ANSWERS)]
    test = [SimpleNamespace(pid=f"t{i}", answer_index=0) for i in range(10)]
    return SimpleNamespace(cfg=cfg, model=model, device=torch.device("cpu"), categories={},
                           splits={"val": val, "test": test},
                           vision=SimpleNamespace(metrics=lambda: {"vision_metric": 1.0}))


def weight_of(trial) -> float:
    return float(trial.model.weight.detach().reshape(-1)[0])


class Script:
    """Scripted train_epoch / evaluate: per epoch, its step losses and its val accuracy."""

    def __init__(self, val: list[float], losses: list[list[float]] | None = None) -> None:
        self.val, self.losses = val, losses or [[1.0]] * len(val)
        self.trained: list[int] = []
        self.scored: list[tuple[str, int]] = []  # (split, the state's epoch) per evaluate call
        self.optimizer: list[list[tuple]] = []  # (lr, weight_decay, betas) per group, per epoch

    def train_epoch(self, trial, optimizer, epoch):
        with torch.no_grad():
            trial.model.weight.fill_(float(epoch + 1))
        self.trained.append(epoch)
        self.optimizer.append([(g["lr"], g["weight_decay"], g["betas"]) for g in optimizer.param_groups])
        return list(self.losses[epoch]), 8

    def evaluate(self, trial, split):
        epoch = round(weight_of(trial))
        self.scored.append((split, epoch))
        if split == "val":  # picks: epoch 1 [0, 1], epoch 2 [1, 1], ...
            picks = [min(epoch - 1, 1), 1]
            scores = [[float(epoch), 2.0], [3.0, 1.0]]
            return self.val[epoch - 1], ScoreResult(picks, scores)
        assert split == "test", split
        right = range(10)[:epoch]
        return -1.0, ScoreResult([0 if i in right else 1 for i in range(10)],
                                 [[0.5 * epoch, 2.0] if i in right else [2.0, 0.5] for i in range(10)])


def run_loop(monkeypatch, cfg, script, keep: Path | None = None, stop_after: int | None = None,
             resume_from: Path | None = None, trial=None, build: bool = False, **run_kwargs):
    """run_trial on the stand-in trial with ``script``'s epochs; returns (reports, checkpoint dirs,
    trial). ``keep``: copy each checkpoint to keep/epoch-N; ``stop_after``: interrupt after the
    report of that epoch (as a killed trial)."""
    monkeypatch.setattr(loop, "train_epoch", script.train_epoch)
    monkeypatch.setattr(loop, "evaluate", script.evaluate)
    monkeypatch.setattr(loop, "_param_metrics", lambda t: {"trainable_params": t.model.weight.numel()})  # 1
    reports, dirs = [], []

    def report(metrics, ckpt):
        reports.append(dict(metrics))
        dirs.append(ckpt)
        if keep is not None and ckpt is not None:
            shutil.copytree(ckpt, keep / f"epoch-{metrics['epoch']}")
        if metrics["epoch"] == stop_after:
            raise KeyboardInterrupt

    if not build:  # else run_trial builds its trial (with the test's stand-in build_trial)
        trial = trial or stub_trial(cfg)
    if stop_after is not None:
        with pytest.raises(KeyboardInterrupt):
            loop.run_trial(cfg, report=report, trial=trial, resume_from=resume_from)
        return reports, dirs, trial
    final = loop.run_trial(cfg, report=report, trial=trial, resume_from=resume_from, **run_kwargs)
    assert final == reports[-1]
    return reports, dirs, trial
