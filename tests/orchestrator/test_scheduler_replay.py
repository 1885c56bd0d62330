"""The scheduler replay: decisions on known curves, counted by hand; the shipped fixture loads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.driver.scheduler_replay import (
    Curve,
    load_curves,
    main,
    outcomes,
    record,
    replay_table,
    settings_grid,
    simulate,
)
from orchestrator.driver.schedulers import AshaSettings
from trainables import defaults

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fifo_curves_full_grid.json"


def curve(rank: int, accs: list[float], benchmark: str = "synth-iconqa") -> Curve:
    epochs, best = [], 0.0
    for e, acc in enumerate(accs, start=1):
        best = max(best, acc)
        epochs.append({"epoch": e, "val_acc": acc, "best_val_acc": best, "train_loss": 1.0,
                       "val_choice_nll": 1.0 - acc, "epoch_time_s": 1.0})
    config = {"benchmark": benchmark, "llm": "tiny-t5", "method": "llm_lora", "sublayer": "all",
              "rank": rank}
    return Curve(config, 96, tuple(epochs))


# T2 starts slowest and ends best: the case the issue describes (judged before it learned).
CURVES = [curve(1, [0.5, 0.6, 0.6, 0.6]), curve(2, [0.55, 0.6, 0.6, 0.6]),
          curve(4, [0.3, 0.5, 0.8, 0.9]), curve(8, [0.4, 0.4, 0.4, 0.4])]


def test_early_rung_stops_the_slow_starter():
    # Sequential (1 slot), rungs at 1 and 2 keeping the top half. By hand: T0 alone at both
    # rungs -> runs 4; T1 0.55 >= median{0.5} and 0.6 >= median{0.6} -> 4; T2 0.3 <
    # median{0.5, 0.55} -> stopped at 1; T3 0.4 < median{0.5, 0.55, 0.3} -> stopped at 1.
    settings = AshaSettings(max_t=4, grace_period=1, reduction_factor=2)
    ran = simulate(CURVES, settings, concurrency=1)
    assert ran == [4, 4, 1, 1]
    out = outcomes(CURVES, ran)[("synth-iconqa", "tiny-t5")]
    assert out.fifo_best == ("llm_lora/all|r4",) and out.fifo_acc == 0.9
    assert out.asha_best == "llm_lora/all|r1" and out.asha_acc == 0.6
    assert not out.kept and not out.within_se


def test_a_later_rung_keeps_it():
    # One rung at 3: T2's best 0.8 by then passes; T3 (0.4) is the only one stopped.
    settings = AshaSettings(max_t=4, grace_period=3, reduction_factor=2)
    ran = simulate(CURVES, settings, concurrency=1)
    assert ran == [4, 4, 4, 3]
    assert outcomes(CURVES, ran)[("synth-iconqa", "tiny-t5")].kept


def test_replay_table_counts_epochs_and_winners():
    grid = settings_grid(4, graces=[1, 3], factors=[2], metrics=["best_val_acc"], brackets=[1])
    rows = replay_table(CURVES, grid, concurrencies=[1], unit_time=True)
    assert [(r["grace"], r["trial_epochs"], r["kept"]) for r in rows] == [(1, 10, 0), (3, 15, 1)]
    assert rows[0]["fifo_epochs"] == 16 and rows[0]["ratio"] == 1.6


def test_curves_of_other_groups_never_interfere():
    other = [curve(r, [0.95] * 4, benchmark="synth-scienceqa") for r in (1, 2, 4)]
    settings = AshaSettings(max_t=4, grace_period=1, reduction_factor=2)
    assert simulate(other + CURVES, settings, concurrency=1)[3:] == [4, 4, 1, 1]


def test_record_reads_a_tune_experiment(tmp_path):
    trial = tmp_path / "exp" / "t0"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps(
        {"cell_index": 0, "benchmark": "synth-iconqa", "llm": "tiny-t5", "method": "baseline",
         "sublayer": "none", "rank": 0, "lr": None, "seed": 0}))
    reports = [{"epoch": e, "val_acc": 0.5, "best_val_acc": 0.5, "train_loss": 1.0,
                "val_choice_nll": 0.7, "epoch_time_s": 2.0, "time_total_s": 9} for e in (1, 2)]
    (trial / "result.json").write_text("\n".join(json.dumps(r) for r in reports) + "\n")
    running = tmp_path / "exp" / "t1"  # still in flight (or cut off): its curve is partial
    running.mkdir()
    (running / "params.json").write_text(
        (trial / "params.json").read_text().replace('"rank": 0', '"rank": 1'))
    (running / "result.json").write_text("\n".join(json.dumps(r) for r in reports) + "\n")
    reports[-1].update(test_acc=0.4, done=True)
    (trial / "result.json").write_text("\n".join(json.dumps(r) for r in reports) + "\n")
    data = record([tmp_path / "exp"], {"commit": "abc"})
    assert data["provenance"] == {"commit": "abc"} and data["unfinished"] == ["exp/t1"]
    (t,) = data["trials"]
    assert t["n_val"] == 96 and t["test_acc"] == 0.4 and len(t["epochs"]) == 2
    assert "time_total_s" not in t["epochs"][0]
    out = tmp_path / "curves.json"
    assert main(["record", "--storage", str(tmp_path / "exp"), "--out", str(out),
                 "--provenance", "commit=abc"]) == 0
    text = out.read_text()  # one trial per line (a committed fixture diffs by trial)
    assert json.loads(text) == data and text.splitlines()[-3] == json.dumps(
        t, sort_keys=True, separators=(",", ":"))
    assert load_curves(out)[1][0].best_val_acc(2) == 0.5


def _trial_dir(exp: Path, name: str, index: int, rank: int, accs: list[float], final: bool) -> None:
    trial = exp / name
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps(
        {"cell_index": index, "benchmark": "synth-iconqa", "llm": "tiny-t5", "method": "llm_lora",
         "sublayer": "all", "rank": rank, "lr": None, "seed": 0}))
    rows = [{"epoch": e, "val_acc": a, "best_val_acc": a, "train_loss": 1.0, "val_gold_nll": 1 - a,
             "epoch_time_s": 1.0} for e, a in enumerate(accs, start=1)]
    rows[-1]["done"] = True  # Tune marks an ASHA-stopped trial's last result done as well
    if final:
        rows[-1].update(test_acc=0.5, best_epoch=len(accs))
    (trial / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_record_combines_runs_of_the_same_seeds(tmp_path):
    """An ASHA run's finished trials + a FIFO run of the cells it stopped = every full curve."""
    asha, fifo = tmp_path / "asha", tmp_path / "fifo"
    _trial_dir(asha, "a0", 0, 1, [0.5, 0.6, 0.7], final=True)
    _trial_dir(asha, "a1", 1, 2, [0.4, 0.45], final=False)  # stopped by ASHA: a partial curve
    _trial_dir(asha, "a2", 2, 4, [0.3], final=False)  # stopped, and not rerun
    _trial_dir(fifo, "f0", 0, 2, [0.4, 0.45, 0.8], final=True)  # its own index 0: not the grid's
    data = record([asha, fifo], {})
    assert [(t["index"], t["config"]["rank"], len(t["epochs"])) for t in data["trials"]] == \
        [(0, 1, 3), (1, 2, 3)]
    assert data["unfinished"] == ["asha/a2"]
    _trial_dir(tmp_path / "other", "o0", 0, 1, [0.5, 0.6, 0.75], final=True)
    with pytest.raises(ValueError, match="differs from the same cell's"):
        record([asha, tmp_path / "other"], {})


def test_tiny_defaults_follow_the_rule_on_the_recorded_curves():
    # The evidence behind trainables.defaults.TINY_ASHA, replayed on the shipped FIFO curves (all
    # 4 groups of the full grid, tiny recipe, 8 epochs) at 1, 2 and 4 trial slots: the defaults
    # keep every group's FIFO winner, and no one-bracket setting that does trains fewer epochs.
    provenance, curves = load_curves(FIXTURE)
    assert provenance["scheduler"] == "fifo" and len(curves) == 33 * len(provenance["groups"]) == 132
    chosen = defaults.TINY_ASHA
    grid = settings_grid(chosen.max_t, graces=[1, 2, 3], factors=[3, 8],
                         metrics=["best_val_acc", "val_gold_nll"], brackets=[1])
    assert chosen in grid
    rows = replay_table(curves, grid, concurrencies=[1, 2, 4])
    row = rows[grid.index(chosen)]
    assert row["kept"] == row["groups"] == 4 and row["trial_epochs"] < row["fifo_epochs"] == 672
    assert all(r["trial_epochs"] >= row["trial_epochs"] for r in rows if r["kept"] == 4)
    # ranked by accuracy, an epoch-1 rung loses winners; the last default (one rung at epoch 3 by
    # accuracy, chosen on the recipe with dropout) loses one here
    assert [r["kept"] for r in rows if r["grace"] == 1 and r["metric"] == "best_val_acc"] == [2, 3]
    last = next(r for r in rows if (r["grace"], r["rf"], r["metric"]) == (3, 3, "best_val_acc"))
    assert last["kept"] == 3
    assert main(["replay", "--curves", str(FIXTURE), "--grace", "1", "--rf", "4",
                 "--metric", "best_val_acc", "--brackets", "1", "--concurrency", "2"]) == 0
