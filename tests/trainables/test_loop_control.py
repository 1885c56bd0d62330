"""The epoch loop's control rules, in milliseconds, on the stand-in trial of _loop_script.py
(one weight, scripted losses and val accuracies; the state of epoch k scores k / 10 on test).
Everything expected below is written from the script, not from the loop's code. test_loop.py
and test_loop_selection.py run the same rules on a real tiny InstructBLIP.
"""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _loop_script import Script, loop_cfg, run_loop, stub_trial, weight_of

from trainables import loop
from trainables.checkpoint import load_checkpoint
from trainables.scoring import ScoreResult
from trainables.split_cache import SplitGroup


def test_the_best_epoch_before_the_last_is_the_state_scored_on_test(monkeypatch, tmp_path):
    script = Script([0.5, 0.75, 0.25])
    reports, dirs, trial = run_loop(monkeypatch, loop_cfg(), script, keep=tmp_path)
    # val once per epoch; the final report reuses the best epoch's val scores (no extra pass)
    assert script.scored == [("val", 1), ("val", 2), ("val", 3), ("test", 2)]
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    assert [r["val_acc"] for r in reports] == [0.5, 0.75, 0.25]
    assert [r["best_val_acc"] for r in reports] == [0.5, 0.75, 0.75]
    final = reports[-1]
    assert (final["best_epoch"], final["done"], final["test_acc"]) == (2, True, 0.2)
    assert weight_of(trial) == 2.0  # the model is left holding the best state
    assert "done" not in reports[0] and "test_acc" not in reports[1]
    # gold-answer NLL of the epoch-2 state: 2 problems at 1.0, 8 at 2.0
    assert final["test_gold_nll"] == pytest.approx(1.8)
    assert all(d is not None for d in dirs)
    # the last checkpoint keeps both states: last = epoch 3, best = epoch 2
    model = torch.nn.Linear(1, 1, bias=False)
    state, best = load_checkpoint(tmp_path / "epoch-3", model, None)
    assert weight_of(SimpleNamespace(model=model)) == 3.0 and float(best["weight"]) == 2.0
    assert (state["epoch"], state["best_epoch"], state["best_val_acc"]) == (3, 2, 0.75)
    # predictions: val rows are the best epoch's picks (epoch 2: [1, 1]), test rows now
    table = pq.read_table(tmp_path / "epoch-3" / "predictions.parquet").to_pydict()
    rows = list(zip(table["split"], table["pid"], table["picked_index"]))
    assert rows[:4] == [("val", "p0", 1), ("val", "p1", 1), ("test", "t0", 0), ("test", "t1", 0)]
    assert rows[4:] == [("test", f"t{i}", 1) for i in range(2, 10)]
    assert not (tmp_path / "epoch-2" / "predictions.parquet").exists()


def test_a_tie_keeps_the_earlier_epoch(monkeypatch):
    reports, _, trial = run_loop(monkeypatch, loop_cfg(epochs=2), Script([0.5, 0.5]))
    assert (reports[-1]["best_epoch"], reports[-1]["test_acc"]) == (1, 0.1)


@pytest.mark.parametrize("kwargs, device, budget", [({}, "cpu", None),
                                                    ({"device": "cuda:1", "memory_budget": 2**30}, "cuda:1", 2**30),
                                                    ({"split_cache": "the process's cache"}, "cpu", None)])
def test_without_a_trial_run_trial_builds_one_on_the_device_within_the_budget(monkeypatch, kwargs, device,
                                                                               budget):
    cfg, built = loop_cfg(epochs=1), []

    def build_trial(c, d, memory_budget=None, split_cache=None):
        built.append((c, d, memory_budget, split_cache))
        return stub_trial(c)

    monkeypatch.setattr(loop, "build_trial", build_trial)
    reports, _, _ = run_loop(monkeypatch, cfg, Script([0.5]), build=True, **kwargs)
    assert built == [(cfg, device, budget, kwargs.get("split_cache"))] and reports[-1]["done"]


def test_the_optimizer_follows_the_config_and_the_linear_lr_decay(monkeypatch):
    script = Script([0.5, 0.6, 0.7])
    run_loop(monkeypatch, loop_cfg(lr=3e-3, weight_decay=0.25), script)
    betas = (0.9, 0.999)  # the tiny-t5 recipe's (trainables.defaults)
    # paper schedule: lr0 * (1 - e / 3) for epochs e = 0, 1, 2; the one-weight model is 2-D: decayed
    assert script.optimizer == [[(pytest.approx(lr), 0.25, betas)] for lr in (3e-3, 2e-3, 1e-3)]


def test_every_epoch_reports_its_metrics(monkeypatch):
    cfg = loop_cfg(epochs=2, lr=0.01)
    reports, _, _ = run_loop(monkeypatch, cfg, Script([0.5, 0.6], [[2.0, 4.0], [1.0, 2.0]]))
    first, second = reports
    assert (first["train_loss"], second["train_loss"]) == (3.0, 1.5)
    assert (first["lr"], second["lr"]) == (0.01, pytest.approx(0.005))  # lr0 * (1 - e / 2)
    assert first["diverged"] is False and second["diverged"] is False
    assert first["trainable_params"] == 1 and "trainable_params" not in second
    # val picks [0, 1] vs gold (0, 1); scores [[1, 2], [3, 1]]: gold NLL (1 + 1) / 2
    assert first["val_gold_nll"] == pytest.approx(1.0)
    choice = ((1 - 1 + math.log(1 + math.exp(-1))) + (1 - 1 + math.log(1 + math.exp(-2)))) / 2
    assert first["val_choice_nll"] == pytest.approx(choice)
    for r in reports:
        assert r["samples_per_s"] > 0 and r["epoch_time_s"] > 0 and r["checkpoint_mb"] > 0
        assert r["peak_memory_gib"] > 0 and r["vision_metric"] == 1.0


@pytest.mark.parametrize(("val", "patience", "min_epochs", "epochs_run"), [
    ([0.5, 0.4, 0.4, 0.4, 0.9], 2, 1, 3),  # two epochs without a new best
    ([0.5, 0.4, 0.4, 0.4, 0.9], 2, 4, 4),  # ... but never before min_epochs
    ([0.5, 0.6, 0.4, 0.7, 0.9], 2, 1, 5),  # a new best resets the count
    ([0.5, 0.4, 0.6, 0.5, 0.9], 2, 1, 5),  # ... also after epochs without one (1, then 1 again)
    ([0.5, 0.4, 0.4, 0.4, 0.9], 3, 1, 4),
])
def test_early_stopping(monkeypatch, val, patience, min_epochs, epochs_run):
    cfg = loop_cfg(epochs=5, patience=patience, min_epochs=min_epochs)
    reports, _, _ = run_loop(monkeypatch, cfg, Script(val))
    assert [r["epoch"] for r in reports] == list(range(1, epochs_run + 1))
    best = max(range(epochs_run), key=lambda e: (val[e], -e)) + 1
    assert reports[-1]["done"] is True and reports[-1]["best_epoch"] == best
    assert reports[-1]["test_acc"] == pytest.approx(best / 10)


def test_divergence_is_measured_against_the_first_step_of_the_first_epoch(monkeypatch):
    """ref = 2.0 (the first step, not the epoch's mean 1.5): 7.9 < 4 x 2 trains on, 8.5 stops."""
    losses = [[2.0, 1.0], [7.9], [8.5], [1.0]]
    reports, dirs, _ = run_loop(monkeypatch, loop_cfg(epochs=4), Script([0.5, 0.6, 0.9, 0.9], losses))
    assert [r["diverged"] for r in reports] == [False, False, True]
    final = reports[-1]
    assert (final["epoch"], final["val_acc"], final["best_val_acc"], final["done"]) == (3, 0.0, 0.6, True)
    assert final["train_loss"] == 8.5 and final["epoch_time_s"] > 0
    assert "test_acc" not in final and "best_epoch" not in final and dirs[-1] is None


def test_a_non_finite_loss_in_the_first_epoch_diverges_with_best_val_zero(monkeypatch):
    script = Script([0.9], [[1.0, float("nan")]])
    reports, dirs, _ = run_loop(monkeypatch, loop_cfg(epochs=2), script)
    assert len(reports) == 1 and reports[0]["diverged"] is True
    assert (reports[0]["val_acc"], reports[0]["best_val_acc"]) == (0.0, 0.0)
    assert reports[0]["trainable_params"] == 1  # the first report, diverged or not
    assert dirs == [None] and script.trained == [0]


def test_resume_continues_from_the_checkpoint_and_a_finished_trial_only_repeats(monkeypatch, tmp_path):
    cfg, val = loop_cfg(epochs=3), [0.5, 0.75, 0.25]
    whole, _, _ = run_loop(monkeypatch, cfg, Script(val))
    first, _, _ = run_loop(monkeypatch, cfg, Script(val), keep=tmp_path, stop_after=1)
    script = Script(val)
    rest, _, trial = run_loop(monkeypatch, cfg, script, keep=tmp_path, resume_from=tmp_path / "epoch-1")
    assert script.trained == [1, 2] and "trainable_params" not in rest[0]

    def strip(r):
        return {k: v for k, v in r.items() if k not in ("samples_per_s", "epoch_time_s", "checkpoint_mb",
                                                        "peak_memory_gib", "trainable_params")}
    assert [strip(r) for r in first + rest] == [strip(r) for r in whole]
    again = Script(val)
    repeat, dirs, _ = run_loop(monkeypatch, cfg, again, resume_from=tmp_path / "epoch-3")
    assert again.trained == [] and dirs == [None]
    assert repeat == [{k: v for k, v in rest[-1].items() if k != "checkpoint_mb"}]


class Steps:
    """Stand-ins for collate_train / train_step that record each optimizer step's micro-batches
    (as problem ids) and the global RNG's next draw (what dropout would use)."""

    def __init__(self, losses: list[float], extra_draws: int = 0) -> None:
        self.losses, self.steps, self.dropout, self.args = list(losses), [], [], set()
        self.augment: list[float] = []
        self.extra_draws = extra_draws  # global-RNG draws a step makes besides this one (another model)

    def train_inputs(self, chunk, gen):
        self.augment.append(float(torch.rand(1, generator=gen)))  # what augmentation would draw
        return ("images", len(chunk))

    def collate(self, chunk, vision_in, spec):
        assert vision_in == ("images", len(chunk))
        self.args.add(("spec", spec))
        return SimpleNamespace(to=lambda device: self.args.add(("device", device)) or [p.pid for p in chunk])

    def step(self, model, micro, optimizer, precision, scaler):
        self.args.update({("model", model), ("optimizer", optimizer), ("precision", precision),
                          ("scaler", scaler)})
        self.steps.append(micro)
        torch.rand(self.extra_draws)
        self.dropout.append(float(torch.rand(1)))
        loss = self.losses.pop(0)
        return SimpleNamespace(loss=loss, samples=sum(map(len, micro)), finite=math.isfinite(loss))


def _epoch(monkeypatch, epoch=0, seed=1, losses=(1.0,) * 4, n=10, extra_draws=0):
    steps = Steps(list(losses), extra_draws)
    monkeypatch.setattr(loop, "collate_train", steps.collate)
    monkeypatch.setattr(loop, "train_step", steps.step)
    cfg = loop_cfg(seed=seed, batch_size=2, grad_accum=2)  # effective batch 4
    model = torch.nn.Linear(1, 1).eval()
    trial = SimpleNamespace(cfg=cfg, model=model, device="device", spec="spec",
                            precision="precision", scaler="scaler", settings=SimpleNamespace(batch_size=3),
                            splits={"train": [SimpleNamespace(pid=i) for i in range(n)]},
                            vision=SimpleNamespace(train_inputs=steps.train_inputs))
    losses_out, samples = loop.train_epoch(trial, "optimizer", epoch)
    assert model.training  # dropout on while training
    assert steps.args == {("model", model), ("optimizer", "optimizer"), ("precision", "precision"),
                          ("scaler", "scaler"), ("spec", "spec"), ("device", "device")}
    return steps, losses_out, samples


def test_an_epoch_is_one_seeded_shuffled_pass_in_steps_of_the_effective_batch(monkeypatch):
    steps, losses, samples = _epoch(monkeypatch, losses=[1.0, 2.0, 3.0])
    # 10 problems, steps of 4 (the config's effective batch), micro-batches of 3 (the fitted size)
    assert [[len(m) for m in s] for s in steps.steps] == [[3, 1], [3, 1], [2]]
    order = [pid for s in steps.steps for m in s for pid in m]
    assert sorted(order) == list(range(10)) and order != list(range(10))
    assert (losses, samples) == ([1.0, 2.0, 3.0], 10)
    again, _, _ = _epoch(monkeypatch, losses=[1.0, 2.0, 3.0])
    assert again.steps == steps.steps and again.dropout == steps.dropout  # same (seed, epoch)
    assert again.augment == steps.augment and len(set(steps.augment)) == 5  # seeded generator
    other_epoch, _, _ = _epoch(monkeypatch, epoch=1, losses=[1.0, 2.0, 3.0])
    other_seed, _, _ = _epoch(monkeypatch, seed=2, losses=[1.0, 2.0, 3.0])
    for other in (other_epoch, other_seed):
        assert other.steps != steps.steps and other.dropout != steps.dropout
        assert other.augment != steps.augment


def test_data_order_and_augmentation_do_not_depend_on_what_the_steps_draw(monkeypatch):
    """Cells of one seed see the same order and augmentations whatever their model draws from
    the global RNG (dropout): they come from the epoch's own generator."""
    plain, _, _ = _epoch(monkeypatch)
    greedy, _, _ = _epoch(monkeypatch, extra_draws=5)
    assert greedy.dropout != plain.dropout  # the steps did draw differently
    assert greedy.steps == plain.steps and greedy.augment == plain.augment


def test_an_epoch_stops_at_the_first_non_finite_loss(monkeypatch):
    steps, losses, samples = _epoch(monkeypatch, losses=[1.0, float("inf"), 3.0])
    assert len(steps.steps) == 2 and losses == [1.0, float("inf")] and samples == 8


def test_evaluate_scores_a_split_at_the_fitted_eval_batch(monkeypatch):
    seen = {}

    def score_in_batches(model, problems, pixels_for, spec, precision, batch_size):
        seen.update(model=model, problems=problems, pixels_for=pixels_for, spec=spec,
                    precision=precision, batch_size=batch_size)
        return ScoreResult([0, 0, 1, 0], [[1.0, 2.0]] * 4)

    monkeypatch.setattr(loop, "score_in_batches", score_in_batches)
    problems = [SimpleNamespace(pid=f"p{i}", answer_index=a) for i, a in enumerate((0, 1, 1, 1))]
    eval_inputs, model, spec, precision = object(), object(), object(), object()
    trial = SimpleNamespace(model=model, spec=spec, precision=precision, splits={"val": problems},
                            settings=SimpleNamespace(eval_batch_size=5),
                            vision=SimpleNamespace(eval_inputs=eval_inputs))
    acc, result = loop.evaluate(trial, "val")
    assert acc == 0.5 and seen == {"model": model, "problems": problems, "pixels_for": eval_inputs,
                                   "spec": spec, "precision": precision, "batch_size": 5}
    scores = loop.split_scores(trial, "val", result)
    assert (scores.split, scores.pids, scores.answers) == ("val", ("p0", "p1", "p2", "p3"), (0, 1, 1, 1))
    assert (scores.picked, scores.scores) == ((0, 0, 1, 0), ((1.0, 2.0),) * 4)


def test_final_evaluation_scores_val_now_when_no_best_scores_were_kept(monkeypatch):
    script = Script([0.5])
    monkeypatch.setattr(loop, "evaluate", script.evaluate)
    trial = stub_trial(loop_cfg())
    with torch.no_grad():
        trial.model.weight.fill_(1.0)
    metrics, table = loop.final_evaluation(trial, {})
    rows = table.to_pydict()
    assert rows["split"] == ["val"] * 2 + ["test"] * 10 and rows["picked_index"][:2] == [0, 1]
    assert metrics["test_acc"] == 0.1 and metrics["test_gold_nll"] == pytest.approx(1.85)
    # choice NLL: -log softmax(-nll) of the gold answer; 1 problem [0.5, 2.0], 9 at [2.0, 0.5]
    choice = (math.log(1 + math.exp(-1.5)) + 9 * (1.5 + math.log(1 + math.exp(-1.5)))) / 10
    assert metrics["test_choice_nll"] == pytest.approx(choice)


def test_final_evaluation_reports_the_test_accuracy_per_category(monkeypatch):
    monkeypatch.setattr(loop, "evaluate", Script([0.5, 0.5, 0.5]).evaluate)
    trial = stub_trial(loop_cfg())
    trial.categories = {f"t{i}": ("NAT", "G1-6") if i < 5 else ("SOC", "G7-12") for i in range(10)}
    trial.categories["p0"] = ("LAN",)
    with torch.no_grad():
        trial.model.weight.fill_(3.0)  # the state of epoch 3: test problems t0, t1, t2 right
    metrics, table = loop.final_evaluation(trial, {})
    cats = {k: v for k, v in metrics.items() if "/" in k}
    assert cats == {"test_acc/NAT": 0.6, "test_acc/G1-6": 0.6, "test_acc/SOC": 0.0, "test_acc/G7-12": 0.0}
    rows = table.to_pydict()
    assert rows["categories"][0] == ["LAN"] and rows["categories"][2] == ["NAT", "G1-6"]


def test_the_first_report_carries_the_model_accounting_and_the_fitted_settings(monkeypatch):
    seen = {}

    class Counts:
        def as_metrics(self):
            return {"trainable_params": 12, "total_params": 1000}

    def count_parameters(model, peft, family):
        seen.update(model=model, peft=peft, family=family)
        return Counts()

    monkeypatch.setattr(loop, "count_parameters", count_parameters)
    cfg = loop_cfg()
    trial = stub_trial(cfg)
    trial.spec = SimpleNamespace(family="t5-family")
    trial.settings = SimpleNamespace(metrics=lambda: {"batch_size": 3, "activation_checkpointing": True})
    assert loop._param_metrics(trial) == {"trainable_params": 12, "total_params": 1000,
                                          "batch_size": 3, "activation_checkpointing": True}
    assert seen == {"model": trial.model, "peft": cfg.peft, "family": "t5-family"}


class _RecordingCache:
    """A split cache that records what it is asked for and always loads."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []

    def get(self, group, split, limit, load):
        self.asked.append((group, split, limit))
        return load()


def _stub_data(monkeypatch, tmp_path, sizes=None) -> tuple[list, Path]:
    """Stand-ins for preparing and encoding; the prepared folder holds only what the categories
    are read from (pid and categories of val and test: no image bytes are read for them)."""
    prepared, calls = tmp_path / "prepared", []
    prepared.mkdir()
    pq.write_table(pa.table({"pid": ["v1", "v2"], "categories": [["NAT", "IMG"], ["SOC"]]}), prepared / "val.parquet")
    pq.write_table(pa.table({"pid": ["t1"], "categories": [["LAN", "G7-12"]]}), prepared / "test.parquet")
    monkeypatch.setattr(loop, "ensure_prepared", lambda benchmark, **kw: calls.append((benchmark, kw)) or prepared)
    monkeypatch.setattr(loop, "load_examples", lambda where, split, size, limit: (
        [] if sizes and not sizes[split] else [("examples", where, split, size, limit)]))
    monkeypatch.setattr(loop, "encode_examples", lambda examples, bundle, cap: [(*e, bundle, cap) for e in examples])
    return calls, prepared


def _real_cfg(tmp_path):
    return loop_cfg(benchmark="scienceqa", data_root=str(tmp_path / "root"), cache_dir=str(tmp_path / "cache"),
                    llm="flan-t5-xl", model_path=str(tmp_path / "weights"), max_train_examples=5,
                    max_eval_examples=3, max_prompt_tokens=77)


def test_the_splits_are_encoded_with_the_trials_limits_and_cached_by_everything_they_depend_on(
        monkeypatch, tmp_path):
    calls, prepared = _stub_data(monkeypatch, tmp_path)
    cfg, cache, bundle = _real_cfg(tmp_path), _RecordingCache(), SimpleNamespace(image_size=224)
    encoded, categories = loop._load_splits(cfg, bundle, ("train", "val", "test"), cache)
    assert calls == [("scienceqa", {"data_root": str(tmp_path / "root"), "cache_dir": str(tmp_path / "cache")})]
    limits = {"train": 5, "val": 3, "test": 3}
    assert encoded == {s: [("examples", prepared, s, 224, n, bundle, 77)] for s, n in limits.items()}
    group = SplitGroup(str(prepared), 224, "flan-t5-xl", str(tmp_path / "weights"), False, 77)
    assert cache.asked == [(group, s, n) for s, n in limits.items()]
    assert categories == {"v1": ("NAT", "IMG"), "v2": ("SOC",), "t1": ("LAN", "G7-12")}  # not train's


def test_a_split_without_problems_is_an_error_naming_it(monkeypatch, tmp_path):
    _, prepared = _stub_data(monkeypatch, tmp_path, sizes={"train": 1, "val": 0, "test": 1})
    with pytest.raises(ValueError) as info:
        loop._load_splits(_real_cfg(tmp_path), SimpleNamespace(image_size=224), ("train", "val"), None)
    assert str(info.value) == f"benchmark 'scienceqa' has no val problems in {prepared}"
