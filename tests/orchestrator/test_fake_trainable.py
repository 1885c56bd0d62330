"""The orchestration tests' fake trainables report exactly what the real loop reports.

The sweep, tracking and report tests run fake trainables (training a model would cost minutes);
what they prove about the tracker-to-report link only holds if the fake's reports have the real
ones' shape. Here the real loop (tiny model, a few problems) and both fakes run side by side and
every kind of report -- first, later, final, diverged -- must carry the same keys with the same
types, and a checkpoint exactly when the real one does.
"""
from __future__ import annotations

import pytest
from _fake_sweep import make_trainable, trial_config
from fake_trainable import fake_trial
from ray import tune

from trainables.config import TrialConfig
from trainables.loop import run_trial


def kind(metrics: dict) -> str:
    if metrics.get("diverged"):
        return "diverged"
    if metrics.get("done"):
        return "final"
    return "first" if "trainable_params" in metrics else "later"


def shape(reports: list[tuple[dict, bool]]) -> dict[str, tuple[dict[str, str], bool]]:
    """kind -> ({key: type name}, has a checkpoint); a kind seen twice must look the same."""
    shapes: dict[str, tuple[dict[str, str], bool]] = {}
    for metrics, checkpoint in reports:
        seen = ({k: type(v).__name__ for k, v in metrics.items()}, checkpoint)
        assert shapes.setdefault(kind(metrics), seen) == seen, kind(metrics)
    return shapes


def assert_same_shape(fake: dict, real: dict, kinds: tuple[str, ...]) -> None:
    """Per kind of report: the keys missing or extra in the fake, and keys of another type."""
    for k in kinds:
        (fake_keys, fake_ckpt), (real_keys, real_ckpt) = fake[k], real[k]
        missing, extra = sorted(set(real_keys) - set(fake_keys)), sorted(set(fake_keys) - set(real_keys))
        types = {key: (fake_keys[key], real_keys[key]) for key in set(fake_keys) & set(real_keys)
                 if fake_keys[key] != real_keys[key]}
        assert (missing, extra, types, fake_ckpt) == ([], [], {}, real_ckpt), f"{k} report"


def real_reports(tmp_path, **over) -> list[tuple[dict, bool]]:
    config = {"method": "qformer_lora", "sublayer": "ffn", "rank": 2, "llm": "tiny-t5",
              "benchmark": "synth-scienceqa", "epochs": 3, "max_train_examples": 16,
              "max_eval_examples": 8, "cache_dir": str(tmp_path / "prepared"), **over}
    reports: list[tuple[dict, bool]] = []
    run_trial(TrialConfig.from_dict(config), report=lambda m, c: reports.append((dict(m), c is not None)))
    return reports


def fake_reports(trainable, config: dict, monkeypatch) -> list[tuple[dict, bool]]:
    reports: list[tuple[dict, bool]] = []
    monkeypatch.setattr(tune, "report", lambda m, checkpoint=None: reports.append(
        (dict(m), checkpoint is not None)))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    trainable(config)
    return reports


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("real")
    shapes = shape(real_reports(tmp))
    diverged = shape(real_reports(tmp, method="llm_lora", sublayer="all", benchmark="synth-iconqa",
                                  lr=1e4))
    assert set(shapes) == {"first", "later", "final"} and "diverged" in diverged
    return {**shapes, "diverged": diverged["diverged"]}


def test_the_sweep_fake_reports_the_real_loops_shape(real, monkeypatch):
    cell = {"method": "qformer_lora", "sublayer": "ffn", "llm": "tiny-t5", "epochs": 3}
    fake = shape(fake_reports(fake_trial, {**cell, "rank": 2, "benchmark": "synth-scienceqa"},
                              monkeypatch))
    planted = shape(fake_reports(fake_trial, {**cell, "rank": 4, "benchmark": "synth-iconqa"},
                                 monkeypatch))  # the fake's planted divergent cell
    assert_same_shape(fake, real, ("first", "later", "final"))
    assert_same_shape(planted, real, ("diverged",))


def test_the_tracking_fake_reports_the_real_loops_shape(real, monkeypatch):
    trainable = make_trainable()
    fake = shape(fake_reports(trainable, trial_config("qformer_lora", "ffn", 2, epochs=3),
                              monkeypatch))
    diverged = shape(fake_reports(trainable, trial_config("both_lora", "all", 8, fake_diverge=True),
                                  monkeypatch))
    assert_same_shape(fake, real, ("first", "later", "final"))
    assert_same_shape(diverged, real, ("diverged",))
