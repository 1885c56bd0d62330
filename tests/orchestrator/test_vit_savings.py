"""--dry-run's ViT feature cache lines: uses, one-off fill, released trunk memory, CLI plumbing."""
from __future__ import annotations

import json

import pytest

from orchestrator.driver import vit_savings
from orchestrator.driver.options import SweepOptions
from orchestrator.driver.plan import build_plan
from orchestrator.driver.prepare import prepare
from orchestrator.driver.spaces import load_space
from orchestrator.driver.vit_savings import SPLIT_PROBLEMS, CacheSetting, apply, format_savings, uses
from orchestrator.sweep import build_parser, main

VIT_G_FLOPS = 2 * 984_759_680 * 257  # ViT-g/14 (EVA, 39 layers), planner's 2 x N x T


@pytest.fixture(scope="module")
def baseline_plan():
    return build_plan(load_space("baseline"))  # 4 trials: 2 LLMs x 2 benchmarks


def test_uses_count_val_every_epoch_test_once_and_training_only_without_augmentation():
    assert uses("scienceqa", 15, augment=True) == 15 * 2097 + 2017
    assert uses("iconqa", 2, augment=False) == 2 * (6316 + 18946) + 6316


def test_savings_are_the_uses_minus_one_fill_per_llm_and_benchmark(baseline_plan):
    plan = baseline_plan + baseline_plan  # two trials per (llm, benchmark): the fill is shared
    assert {t.vit_flops_per_image for t in plan} == {VIT_G_FLOPS}
    on = apply(plan, CacheSetting(True, None, None))  # paper recipe: 15 epochs, augment
    for before, after in zip(plan, on):
        n = SPLIT_PROBLEMS[after.benchmark]
        want = (15 * n["val"] + n["test"] - (n["val"] + n["test"]) / 2) * VIT_G_FLOPS
        assert after.vit_cache_flops_saved == pytest.approx(want, rel=1e-9)
        assert after.vit_resident and after.est_gpu_memory_bytes == before.est_gpu_memory_bytes
    off = apply(plan, CacheSetting(True, False, None))
    for before, after in zip(plan, off):
        assert not after.vit_resident
        assert 1.8 * 2**30 < before.est_gpu_memory_bytes - after.est_gpu_memory_bytes < 2 * 2**30  # bf16 ViT-g
        assert after.vit_cache_flops_saved > on[plan.index(before)].vit_cache_flops_saved
    disabled = apply(plan, CacheSetting(False, None, None))
    assert all(t.vit_cache_flops_saved == 0 and t.vit_resident for t in disabled)
    assert "off" in format_savings(disabled, CacheSetting(False, None, None))


@pytest.mark.parametrize("mode", ["off", "on"])
def test_releasing_the_trunk_keeps_an_explicit_checkpointing_choice(mode):
    """The refit without the trunk obeys --activation-checkpointing: under auto Vicuna on an
    A10G needs checkpointing, under an explicit off it must not get it (it does not fit)."""
    auto = apply(build_plan(load_space("baseline")), CacheSetting(True, False, None))
    assert any(f and f["activation_checkpointing"] for t in auto for f in t.fits.values())
    chosen = apply(build_plan(load_space("baseline"), {"activation_checkpointing": mode}),
                   CacheSetting(True, False, None))
    assert all(not t.vit_resident and t.activation_checkpointing == mode for t in chosen)
    used = {f["activation_checkpointing"] for t in chosen for f in t.fits.values() if f}
    assert used == {mode == "on"}


def test_gpu_hours_follow_the_stated_throughput():
    assert vit_savings.gpu_hours(312e12 * 0.4 * 3600) == pytest.approx(1.0)


def test_the_dry_run_prints_the_savings_and_writes_them_to_the_plan(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["--space", "baseline", "--dry-run", "--plan-out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ViT feature cache: saves" in text and "GPU-hours" in text and "--augment off" in text
    plan = json.loads(out.read_text())
    assert all(p["vit_cache_flops_saved"] > 0 and p["vit_resident"] for p in plan)
    assert main(["--space", "baseline", "--dry-run", "--augment", "off", "--plan-out", str(out)]) == 0
    assert "4 of 4 trials release the ViT trunk" in capsys.readouterr().out
    assert not any(p["vit_resident"] for p in json.loads(out.read_text()))


def test_cache_options_reach_every_trial_config(tmp_path):
    def trials(*argv):
        options = SweepOptions.from_namespace(build_parser().parse_args(["--space", "smoke", *argv]), [])
        return prepare(options).trials
    assert all(t.augment is True and t.vit_cache is False
               for t in trials("--augment", "on", "--no-vit-cache", "--cache-dir", str(tmp_path)))
    for t in trials("--vit-cache-dir", "rel/dir", "--vit-cache-max-gb", "2", "--cache-dir", str(tmp_path)):
        assert t.vit_cache_dir.endswith("/rel/dir") and t.vit_cache_dir.startswith("/") and t.vit_cache_max_gb == 2
    default = trials("--cache-dir", str(tmp_path))[0]
    assert default.vit_cache and default.vit_cache_dir == str(tmp_path.resolve() / "vit-features")


def test_the_setting_takes_defaults_from_one_place_and_rejects_values_of_the_wrong_type():
    from trainables import defaults
    assert vit_savings.setting_from_overrides({"lr": 1e-4}) == CacheSetting(defaults.VIT_CACHE, None, None)
    assert vit_savings.setting_from_overrides({"vit_cache": False, "augment": False, "epochs": 3}) \
        == CacheSetting(False, False, 3)
    for bad, name in (({"vit_cache": "no"}, "vit_cache"), ({"augment": "off"}, "augment"),
                      ({"epochs": 0}, "epochs"), ({"epochs": True}, "epochs")):
        with pytest.raises(ValueError, match=name):
            vit_savings.setting_from_overrides(bad)


def test_an_augment_value_the_parser_does_not_know_fails_loudly():
    from orchestrator.driver.options import OptionError
    with pytest.raises(OptionError, match="--augment"):
        SweepOptions(space="smoke", augment="yes")
    assert SweepOptions(space="smoke", augment="off").trial_overrides() == {"augment": False}
    assert SweepOptions(space="smoke", epochs=3, seed=5, no_vit_cache=True).trial_overrides() \
        == {"epochs": 3, "seed": 5, "vit_cache": False}


def _dry_plan(tmp_path, space_text, *argv):
    space, out = tmp_path / "space.yaml", tmp_path / "plan.json"
    space.write_text(space_text)
    assert main(["--space", str(space), "--dry-run", "--plan-out", str(out), *argv]) == 0
    return json.loads(out.read_text())


def test_the_dry_run_reads_the_space_overrides_and_the_command_line_wins(tmp_path, capsys):
    space = "methods: [baseline]\nllms: [flan-t5-xl]\nbenchmarks: [scienceqa]\n"
    paper = _dry_plan(tmp_path, space)[0]  # recipe: 15 epochs, augmentation on
    released = _dry_plan(tmp_path, space + "augment: false\n")[0]
    assert paper["vit_resident"] and not released["vit_resident"]
    assert released["est_gpu_memory_bytes"] < paper["est_gpu_memory_bytes"]
    assert released["vit_cache_flops_saved"] > paper["vit_cache_flops_saved"] > 0
    assert _dry_plan(tmp_path, space + "augment: false\n", "--augment", "on")[0] == paper
    three = _dry_plan(tmp_path, space + "epochs: 3\n")[0]
    n, flops = SPLIT_PROBLEMS["scienceqa"], paper["vit_flops_per_image"]
    assert three["vit_cache_flops_saved"] == int((3 * n["val"] + n["test"] - n["val"] - n["test"]) * flops)
    assert _dry_plan(tmp_path, space + "epochs: 3\n", "--epochs", "15")[0] == paper
    capsys.readouterr()
    off = _dry_plan(tmp_path, space + "augment: false\n", "--no-vit-cache")[0]
    assert off["vit_cache_flops_saved"] == 0 and off["vit_resident"]
    assert "ViT feature cache: off" in capsys.readouterr().out


def test_a_space_whose_cache_key_has_the_wrong_type_fails_before_the_plan(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("methods: [baseline]\nvit_cache: maybe\n")
    with pytest.raises(SystemExit) as exit_:
        main(["--space", str(space), "--dry-run"])
    assert exit_.value.code == 2 and "vit_cache must be true or false" in capsys.readouterr().err
