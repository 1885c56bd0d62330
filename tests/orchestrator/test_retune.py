"""The divergence rule and how retunes replace cells."""
from __future__ import annotations

import dataclasses

import pytest

from orchestrator.driver import retune
from orchestrator.driver.retune import Retune, divergence_reason, find_divergent, margin, retune_name, val_size
from orchestrator.results.model import DIVERGED, ERROR, FINISHED, STOPPED, TrialResult, outcomes
from trainables.config import TrialConfig
from trainables.defaults import default_lr


def row(rank, accs, *, method="qformer_lora", diverged=False, error=None, stopped=False,
        bench="synth-scienceqa", lr=None, max_eval=None, retune_of=None, adapter="lora"):
    config = TrialConfig.from_dict({
        "benchmark": bench, "llm": "tiny-t5", "method": method,
        "sublayer": "ffn" if method != "baseline" else "none", "rank": rank, "lr": lr,
        "max_eval_examples": max_eval, "data_root": "never-read" if bench in ("scienceqa", "iconqa") else None,
        "retune_of": retune_of, "adapter": adapter})
    history = tuple((e, max(accs[:e])) for e in range(1, len(accs) + 1))
    status = ERROR if error else DIVERGED if diverged else STOPPED if stopped else FINISHED
    return TrialResult(config.cell, status, best_val_acc=max(accs) if accs else None,
                       test_acc=None if stopped or diverged else max(accs) - 0.01,
                       epochs_run=len(accs), error=error, history=history, config=config,
                       lr=config.lr, retune_of=retune_of)


def test_reported_divergence_counts():
    rows = [row(1, [0.2, 0.2], diverged=True), row(2, [0.5, 0.6])]
    assert divergence_reason(rows[0], rows) == "trial reported diverged"


def test_far_below_siblings_counts_and_noise_does_not():
    # 48 validation problems: sigma ~ 7 points, 3 sigma ~ 21 points at p ~ 0.7.
    good = [row(1, [0.6, 0.7, 0.72]), row(2, [0.6, 0.71, 0.7])]
    noisy = row(4, [0.55, 0.6, 0.6])          # 12 points below: within noise
    bad = row(8, [0.3, 0.32, 0.35])            # 37 points below: divergent
    rows = good + [noisy, bad]
    assert divergence_reason(noisy, rows) is None
    assert "trails rank" in divergence_reason(bad, rows)
    assert [r.cell.peft.rank for r, _ in find_divergent(rows)] == [8]


def test_a_cell_with_several_divergent_seeds_is_retuned_once_from_its_first():
    seeds = [dataclasses.replace(row(8, [0.2], diverged=True), seed=seed) for seed in (0, 1)]
    rows = [row(1, [0.6, 0.7]), *seeds, row(4, [0.3], diverged=True)]
    found = find_divergent(rows)
    assert [(r.cell.peft.rank, reason) for r, reason in found] == [(8, "trial reported diverged"),
                                                                    (4, "trial reported diverged")]
    assert found[0][0] is seeds[0]


def test_stopped_trial_is_compared_at_its_own_epoch():
    # Stopped at epoch 1 with 0.40 while the siblings were at 0.45 at epoch 1 (0.9 later): fine.
    rows = [row(1, [0.45, 0.7, 0.9]), row(2, [0.44, 0.8, 0.9]), row(4, [0.40], stopped=True)]
    assert divergence_reason(rows[2], rows) is None


def test_margin_shrinks_to_the_absolute_floor_on_large_validation_sets():
    assert margin(0.8, 48) == pytest.approx(3 * (0.8 * 0.2 / 48) ** 0.5)
    assert margin(0.8, 2097) == 0.10
    # On the real benchmark a 14-point gap (the paper's 71.29 among ~85s) counts.
    rows = [row(1, [0.85], bench="scienceqa"), row(2, [0.7129], bench="scienceqa")]
    assert divergence_reason(rows[1], rows) is not None


def test_errors_and_baselines_without_siblings_are_not_retuned():
    rows = [row(1, [0.1], error="RuntimeError: boom"), row(2, [0.9]),
            row(0, [0.1], method="baseline")]
    assert find_divergent(rows) == []


def test_other_adapters_are_not_siblings():
    rows = [row(1, [0.8]), row(2, [0.3], adapter="dora")]
    assert find_divergent(rows) == []


def test_best_retune_replaces_the_cell_only_when_better():
    cell = "synth-scienceqa|tiny-t5|qformer_lora/ffn|r4"
    orig = row(4, [0.3, 0.3], diverged=True)
    trial_a = row(4, [0.5, 0.6], lr=1e-4, retune_of=cell)
    trial_b = row(4, [0.5, 0.7], lr=3e-4, retune_of=cell)
    rt = Retune(original=orig, reason="trial reported diverged", trials=[trial_a, trial_b])
    assert rt.replaces and rt.chosen is trial_b and "best lr 0.0003" in rt.describe()
    shown = {o.cell.id: o.chosen for o in outcomes([row(1, [0.8]), orig, trial_a, trial_b])}
    assert shown[cell] is trial_b and shown[cell].retuned
    assert not shown["synth-scienceqa|tiny-t5|qformer_lora/ffn|r1"].retuned
    worse = Retune(original=row(4, [0.8]), reason="gap",
                   trials=[row(4, [0.2], lr=1e-5, retune_of=cell)])
    assert not worse.replaces and "kept" in worse.describe()
    tie = Retune(original=row(4, [0.8]), reason="gap", trials=[row(4, [0.8], retune_of=cell)])
    assert not tie.replaces  # a retune must beat the grid trial


def test_validation_size_is_the_benchmarks_capped_by_max_eval_examples():
    def size(bench: str, cap: int | None = None) -> int:
        return val_size(row(1, [0.5], bench=bench, max_eval=cap).config)

    assert size("scienceqa") == 2097  # paper appendix B
    assert size("iconqa") == 6316
    assert size("iconqa", 500) == 500
    assert size("scienceqa", 5000) == 2097
    assert size("synth-iconqa") == 96  # the synth stand-ins' val split


def test_margin_clamps_the_accuracy_and_guards_tiny_validation_sets():
    assert margin(1.5, 48) == 0.10 and margin(-0.2, 48) == 0.10  # p clamped to [0, 1]: no noise
    assert margin(0.5, 1) == pytest.approx(1.5)  # 3 * sqrt(0.25 / 1)
    assert margin(0.5, 0) == pytest.approx(1.5)  # n_val 0 is read as 1, not a division by zero


def test_a_gap_exactly_at_the_margin_is_not_divergence(monkeypatch):
    monkeypatch.setattr(retune, "MIN_GAP", 0.125)  # exact in binary, as is 0.75 - 0.625
    rows = [row(1, [0.75], bench="scienceqa"), row(2, [0.625], bench="scienceqa")]
    assert divergence_reason(rows[1], rows) is None
    rows[1] = row(2, [0.624], bench="scienceqa")
    assert "trails rank 1's 0.750 by more than 0.125" in divergence_reason(rows[1], rows)


def test_siblings_without_a_value_at_the_epoch_are_skipped_not_the_end():
    late = dataclasses.replace(row(1, [0.9, 0.9]), history=((2, 0.9),))
    rows = [late, row(2, [0.9, 0.9]), row(4, [0.3])]  # at epoch 1 rank 1 has no value yet
    assert divergence_reason(rows[2], rows).startswith("best val 0.300 at epoch 1 trails rank 2's")


def test_describe_says_what_was_tried_and_what_won():
    orig = row(4, [0.3, 0.3], diverged=True)
    rt = Retune(original=orig, reason="trial reported diverged",
                trials=[row(4, [0.5, 0.6], lr=1e-4), row(4, [0.5, 0.7], lr=3e-4)])
    lr = default_lr("qformer_lora", "tiny-t5")
    assert rt.describe() == (f"synth-scienceqa|tiny-t5|qformer_lora/ffn|r4: trial reported diverged; "
                             f"2 lrs tried; best lr 0.0003: val 70.0 (was 30.0 at lr {lr:.3g})")
    silent = Retune(original=row(4, [], diverged=True, stopped=True), reason="trial reported diverged",
                    trials=[row(4, [0.5], lr=1e-4)])  # diverged before its first validation
    assert silent.describe().endswith(f"best lr 0.0001: val 50.0 (was 0.0 at lr {lr:.3g})")
    kept = Retune(original=row(4, [0.8]), reason="gap", trials=[row(4, [0.2], lr=1e-5)])
    assert kept.describe() == ("synth-scienceqa|tiny-t5|qformer_lora/ffn|r4: gap; 1 lrs tried; "
                               "no retune trial beat the original (kept)")


def test_retune_name_is_the_sweep_name_and_a_path_safe_cell_id():
    assert retune_name("sweep-A", "synth-scienceqa|tiny-t5|qformer_lora/ffn|r4") == \
        "sweep-A-retune-synth-scienceqa_tiny-t5_qformer_lora_ffn_r4"
    assert retune_name("s", "Bench|LLM.v2|m/s|r1") == "s-retune-Bench_LLM.v2_m_s_r1"
