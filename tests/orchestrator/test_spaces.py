"""Space loading and validation: every bad space fails with one message naming the culprit."""
from __future__ import annotations

import pytest

from orchestrator.driver.spaces import SpaceError, load_space
from orchestrator.driver.targets import resolve_targets, trial_configs
from trainables.defaults import default_lr


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_space_expands_like_the_python_ones(tmp_path):
    space = load_space(write(tmp_path, """
methods: [baseline, {method: qformer_lora, sublayers: [ffn, all]}]
ranks: [1, 2]
llms: [flan-t5-xl]
benchmarks: [iconqa]
epochs: 3
"""))
    assert space.name == "space"
    assert len(space.cells) == 1 + 2 * 2
    assert space.overrides == {"epochs": 3}
    assert {c.peft.rank for c in space.cells if c.peft.method == "baseline"} == {0}


@pytest.mark.parametrize("text,needle", [
    ("methods: [baseline]\nbogus: 1\n", "unknown key(s) bogus"),
    ("methods: [llm_lora]\nranks: [0]\n", "bad rank 0"),
    ("methods: [llm_lora]\nranks: [two]\n", "bad rank 'two'"),
    ("methods: [{method: llm_lora, sublayers: [cross_attn]}]\nranks: [1]\n",
     "sublayer 'cross_attn' does not exist for llm_lora"),
    ("methods: [llm_lora]\nranks: []\n", "grid is empty"),
    ("methods: []\nranks: [1]\n", "grid is empty"),
    ("methods: [llm_lora]\nranks: [1]\nllms: []\n", "grid is empty"),
    ("methods: [fancy_lora]\nranks: [1]\n", "unknown method 'fancy_lora'"),
    ("methods: [baseline]\nllms: [gpt-4]\n", "unknown llm 'gpt-4'"),
    ("methods: [baseline\n", "not usable YAML"),
    ("- a list\n", "must hold a mapping"),
    ("methods: [llm_lora]\n", "'ranks' is required"),
])
def test_bad_yaml_spaces_are_rejected_by_name(tmp_path, text, needle):
    with pytest.raises(SpaceError) as err:
        load_space(write(tmp_path, text))
    assert needle in str(err.value)
    assert "space.yaml" in str(err.value)


def test_adapter_and_alpha_axes(tmp_path):
    space = load_space(write(tmp_path, """
methods: [baseline, {method: both_lora}]
ranks: [1, 8]
adapters: [lora, dora]
alphas: [fixed8, 2r]
llms: [vicuna-7b]
benchmarks: [iconqa]
"""))
    assert len(space.cells) == 1 + 2 * 2 * 2  # the baseline once (no LoRA, no adapter)
    ids = [c.id for c in space.cells]
    assert ids[:3] == ["iconqa|vicuna-7b|baseline/none|r0", "iconqa|vicuna-7b|both_lora/all|r1",
                       "iconqa|vicuna-7b|both_lora/all|r8"]
    assert "iconqa|vicuna-7b|both_lora/all|r8|dora,alpha=2r" in ids
    configs = trial_configs(space, resolve_targets([], [], []), cache_dir="/c")
    assert {(c.adapter, c.alpha) for c in configs} == {
        ("lora", "fixed8"), ("lora", "2r"), ("dora", "fixed8"), ("dora", "2r")}
    assert [c.cell_id for c in configs][-1] == "synth-iconqa|tiny-llama|both_lora/all|r8|dora,alpha=2r"


@pytest.mark.parametrize("text,needle", [
    ("methods: [both_lora]\nranks: [1]\nadapters: [vera]\n", "unknown adapter 'vera'; allowed: "
                                                          "lora, dora, rslora, pissa"),
    ("methods: [both_lora]\nranks: [1]\nalphas: [16]\n", "unknown alpha 16"),
    ("methods: [both_lora]\nranks: [1]\nadapters: dora\n", "'adapters' must be a list"),
    ("cells: [{benchmark: iconqa, llm: vicuna-7b, method: both_lora, sublayer: all, rank: 1,"
     " adapter: vera}]\n", "cell 0: unknown adapter 'vera'"),
    ("cells: [{benchmark: iconqa, llm: tiny-t5, method: both_lora, sublayer: all, rank: 1}]\n",
     "unknown llm 'tiny-t5'"),
    ("cells: [{benchmark: iconqa, llm: vicuna-7b, method: both_lora, rank: 1}]\n",
     "missing sublayer"),
    ("cells: []\nranks: [1]\n", "cannot be combined with grid key(s) ranks"),
])
def test_bad_adapter_axes_and_cells_are_rejected_by_name(tmp_path, text, needle):
    with pytest.raises(SpaceError) as err:
        load_space(write(tmp_path, text))
    assert needle in str(err.value)


def test_unknown_space_lists_the_known_ones():
    with pytest.raises(SpaceError, match="unknown space 'nope'.*full_grid"):
        load_space("nope")
    with pytest.raises(SpaceError, match="does not exist"):
        load_space("missing.yaml")


def test_offline_stand_ins_by_default():
    configs = trial_configs(load_space("baseline"), resolve_targets([], [], []), cache_dir="/c")
    assert {(c.benchmark, c.llm) for c in configs} == {
        (b, llm) for b in ("synth-scienceqa", "synth-iconqa") for llm in ("tiny-t5", "tiny-llama")}
    assert all(c.cache_dir == "/c" and c.lr == default_lr("baseline", c.llm) for c in configs)


def test_targets_map_paper_names_to_presets_paths_and_data(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    targets = resolve_targets([f"flan-t5-xl={model_dir}", "vicuna-7b=small-llama"],
                              ["iconqa=sample-iconqa"], [f"scienceqa={tmp_path}"])
    assert targets.llms["flan-t5-xl"] == {"llm": "flan-t5-xl", "model_path": str(model_dir)}
    assert targets.llms["vicuna-7b"]["llm"] == "small-llama"
    assert targets.benchmarks["iconqa"]["benchmark"] == "sample-iconqa"
    assert targets.benchmarks["scienceqa"] == {"benchmark": "scienceqa", "data_root": str(tmp_path)}
    assert targets.display_name("small-llama") == "vicuna-7b"


@pytest.mark.parametrize("llm,bench,root,needle", [
    (["flan-t5-xl=/no/such/dir"], [], [], "neither a preset"),
    (["gpt=tiny-t5"], [], [], "expected NAME=VALUE"),
    ([], ["iconqa=imagenet"], [], "unknown benchmark"),
    ([], [], ["scienceqa=/no/such/dir"], "no such directory"),
])
def test_bad_targets(llm, bench, root, needle):
    with pytest.raises(SpaceError, match=needle):
        resolve_targets(llm, bench, root)


def test_cli_overrides_win_and_every_config_is_a_valid_trial_config(tmp_path):
    space = load_space(write(tmp_path, "methods: [both_lora]\nranks: [2]\nepochs: 3\nlr: 0.001\n"))
    configs = trial_configs(space, resolve_targets([], [], []), cache_dir="/c",
                            extra={"epochs": 5, "seed": 7})
    assert len(configs) == 4
    assert all(c.epochs == 5 and c.seed == 7 and c.lr == 0.001 for c in configs)


def test_invalid_override_value_fails_before_ray(tmp_path):
    space = load_space(write(tmp_path, "methods: [baseline]\nepochs: 0\n"))
    with pytest.raises(SpaceError, match="epochs must be >= 1"):
        trial_configs(space, resolve_targets([], [], []), cache_dir="/c")
