"""What the loop measures into its reports (throughput, epoch time, peak memory, checkpoint size,
vision metrics), the divergence threshold's edge, and what a resume restores, on the stand-in
trial of _loop_script.py. Expected values come from the scripted clock / sizes, not the loop."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from _loop_script import Script, loop_cfg, run_loop, stub_trial, weight_of

from trainables import defaults, loop
from trainables.checkpoint import CheckpointError, load_checkpoint


class Clock:
    """A perf_counter that returns the scripted ticks in order."""

    def __init__(self, ticks: list[float]) -> None:
        self.ticks = list(ticks)

    def perf_counter(self) -> float:
        return self.ticks.pop(0)


def test_throughput_epoch_time_and_peak_memory_come_from_the_clock_and_the_trials_device(monkeypatch):
    # per epoch: start, end of training, end of the epoch; the third epoch diverges (9 > 4 x 2)
    clock = Clock([100.0, 102.0, 107.0, 200.0, 204.0, 210.0, 300.0, 301.0, 303.0])
    monkeypatch.setattr(loop, "time", clock)
    devices = []
    monkeypatch.setattr(loop, "peak_memory_bytes", lambda device: devices.append(device) or 3 * 2**30)
    script = Script([0.5, 0.6, 0.7], [[2.0], [1.0], [9.0]])
    reports, _, trial = run_loop(monkeypatch, loop_cfg(epochs=3), script)
    # 8 samples per scripted epoch: 8 / 2 s, 8 / 4 s, 8 / 1 s
    assert [(r["samples_per_s"], r["epoch_time_s"]) for r in reports] == [(4.0, 7.0), (2.0, 10.0), (8.0, 3.0)]
    assert reports[-1]["diverged"] is True and clock.ticks == []
    assert [r["peak_memory_gib"] for r in reports[:2]] == [3.0, 3.0] and devices == [trial.device] * 2


def test_checkpoint_mb_is_the_size_of_the_checkpoint_written(monkeypatch, tmp_path):
    reports, _, _ = run_loop(monkeypatch, loop_cfg(epochs=3), Script([0.5, 0.75, 0.25]), keep=tmp_path)
    for r in reports[:2]:  # the final folder also gets predictions.parquet, written after
        files = [f for f in (tmp_path / f"epoch-{r['epoch']}").rglob("*") if f.is_file()]
        assert r["checkpoint_mb"] == pytest.approx(sum(f.stat().st_size for f in files) / 2**20, rel=1e-9)


def test_an_epoch_loss_of_exactly_the_factor_times_the_first_step_is_not_a_blow_up(monkeypatch):
    """Divergence is a mean loss *above* divergence_factor (4) x the first step's loss (2)."""
    losses = [[2.0], [8.0], [8.001]]
    reports, _, _ = run_loop(monkeypatch, loop_cfg(epochs=3), Script([0.5, 0.6, 0.7], losses))
    assert [r["diverged"] for r in reports] == [False, False, True]


def test_the_final_report_carries_the_vision_metrics_after_test_scoring(monkeypatch):
    """Vision metrics (e.g. the feature cache's counters) cover all scoring up to the report."""
    cfg, script = loop_cfg(epochs=2), Script([0.5, 0.6])
    trial = stub_trial(cfg)
    trial.vision = SimpleNamespace(metrics=lambda: {"splits_scored": len(script.scored)})
    reports, _, _ = run_loop(monkeypatch, cfg, script, trial=trial)
    assert [r["splits_scored"] for r in reports] == [1, 3]  # val; val, val, test


class SteppingScript(Script):
    """Also takes one real AdamW step per epoch (gradient 1 on the weight), recording how many
    steps the optimizer had already taken when the epoch began."""

    def __init__(self, val: list[float]) -> None:
        super().__init__(val)
        self.steps_before: list[int] = []

    def train_epoch(self, trial, optimizer, epoch):
        weight = trial.model.weight
        self.steps_before.append(int(optimizer.state[weight].get("step", 0)))
        optimizer.zero_grad()
        weight.sum().backward()
        optimizer.step()
        return super().train_epoch(trial, optimizer, epoch)


def test_resume_restores_the_optimizer_state(monkeypatch, tmp_path):
    cfg, val = loop_cfg(epochs=3), [0.5, 0.75, 0.25]
    first = SteppingScript(val)
    run_loop(monkeypatch, cfg, first, keep=tmp_path, stop_after=1)
    resumed = SteppingScript(val)
    run_loop(monkeypatch, cfg, resumed, resume_from=tmp_path / "epoch-1")
    assert (first.steps_before, resumed.trained, resumed.steps_before) == ([0], [1, 2], [1, 2])


def test_resume_refuses_the_checkpoint_of_another_cell(monkeypatch, tmp_path):
    val = [0.5, 0.75, 0.25]
    run_loop(monkeypatch, loop_cfg(), Script(val), keep=tmp_path, stop_after=1)
    script = Script(val)
    with pytest.raises(CheckpointError, match="rank"):
        run_loop(monkeypatch, loop_cfg(rank=4), script, resume_from=tmp_path / "epoch-1")
    assert script.trained == []


def test_the_optimizer_takes_the_betas_of_the_llms_recipe(monkeypatch):
    recipe = dataclasses.replace(defaults.TINY, betas=(0.8, 0.95))  # every shipped recipe has the default
    monkeypatch.setattr(defaults, "recipe_for", lambda llm: recipe if llm == "tiny-t5" else None)
    script = Script([0.5])
    run_loop(monkeypatch, loop_cfg(epochs=1), script)
    assert script.optimizer[0][0][2] == (0.8, 0.95)


class PeftLike(torch.nn.Module):
    """A peft-wrapped model's shape: its weight is named base_model.model.weight and
    get_base_model() is the plain model (trainables.step.unwrap)."""

    def __init__(self) -> None:
        super().__init__()
        self.base_model = torch.nn.Module()
        self.base_model.model = torch.nn.Linear(1, 1, bias=False)

    def get_base_model(self) -> torch.nn.Module:
        return self.base_model.model

    @property
    def weight(self) -> torch.nn.Parameter:
        return self.base_model.model.weight


def test_checkpoints_of_a_wrapped_model_hold_the_plain_models_names(monkeypatch, tmp_path):
    cfg = loop_cfg(epochs=2)
    trial = stub_trial(cfg)
    trial.model = PeftLike()
    run_loop(monkeypatch, cfg, Script([0.75, 0.5]), keep=tmp_path, trial=trial)
    plain = torch.nn.Linear(1, 1, bias=False)
    _, best = load_checkpoint(tmp_path / "epoch-2", plain, None)
    assert (weight_of(SimpleNamespace(model=plain)), float(best["weight"])) == (2.0, 1.0)
