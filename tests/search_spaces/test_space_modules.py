"""Every shipped space loads, has the documented size, and documents its hyper-parameters."""
from __future__ import annotations

import importlib
from collections import Counter

import pytest

from orchestrator.driver.spaces import SPACE_MODULES, load_space
from trainables.methods import METHODS


@pytest.mark.parametrize("name", sorted(SPACE_MODULES) + ["lr_retune"])
def test_docstring_names_studied_nuisance_fixed(name):
    doc = importlib.import_module(f"search_spaces.{name}").__doc__
    for word in ("Studied", "Nuisance", "Fixed"):
        assert f"{word} hyper-parameters" in doc, (name, word)


def test_full_grid_is_the_papers_132_trials():
    space = load_space("full_grid")
    assert len(space.cells) == 132
    groups = Counter(c.group for c in space.cells)
    assert groups == {(b, llm): 33 for b in ("scienceqa", "iconqa") for llm in ("flan-t5-xl", "vicuna-7b")}
    baselines = [c for c in space.cells if c.peft.method == "baseline"]
    assert len(baselines) == 4 and all(c.peft.rank == 0 for c in baselines)
    lora = [c.peft for c in space.cells if c.peft.method != "baseline"]
    assert len({(p.method, p.sublayer) for p in lora}) == 8
    assert {p.rank for p in lora} == {1, 2, 4, 8}
    assert all(c.peft.is_paper_lora for c in space.cells)
    assert len({c.id for c in space.cells}) == 132  # no duplicates
    # The grid order of the paper's sweeps (resumes match trials by it): benchmark, LLM, row, rank.
    assert [c.id for c in space.cells[:3]] == [
        "scienceqa|flan-t5-xl|baseline/none|r0", "scienceqa|flan-t5-xl|llm_lora/ffn|r1",
        "scienceqa|flan-t5-xl|llm_lora/ffn|r2"]
    assert space.cells[-1].id == "iconqa|vicuna-7b|both_lora/all|r8"


@pytest.mark.parametrize("name,method,count", [
    ("qformer_lora", "qformer_lora", 4 * 4 * 4), ("llm_lora", "llm_lora", 3 * 4 * 4),
    ("both_lora", "both_lora", 1 * 4 * 4), ("baseline", "baseline", 4)])
def test_row_group_spaces(name, method, count):
    space = load_space(name)
    assert len(space.cells) == count
    assert {c.peft.method for c in space.cells} == {method}
    assert {c.peft.sublayer for c in space.cells} == set(METHODS[method].sublayers)


def test_smoke_is_small_and_covers_every_group():
    space = load_space("smoke")
    assert len(space.cells) <= 6
    assert {c.group for c in space.cells} == {
        (b, llm) for b in ("scienceqa", "iconqa") for llm in ("flan-t5-xl", "vicuna-7b")}
    assert space.overrides["epochs"] <= 3


def test_adapters_space_crosses_two_rows_with_three_adapters():
    space = load_space("adapters")
    assert len(space.cells) == 2 * 3 * 4 * 4
    assert Counter(c.peft.adapter for c in space.cells) == {"lora": 32, "dora": 32, "rslora": 32}
    assert {c.row_label for c in space.cells} == {
        f"{row} {a}".strip() for row in ("both_lora/all", "qformer_lora/all")
        for a in ("", "dora", "rslora")}
    full = {c.id for c in load_space("full_grid").cells}
    assert {c.id for c in space.cells if c.peft.is_paper_lora} <= full  # same ids as full_grid


def test_lr_retune_is_log_uniform_around_the_default():
    from search_spaces import lr_retune
    space = lr_retune.space_for({"method": "qformer_lora", "lr": None, "rank": 4}, "cell", 5e-4)
    lr = space["lr"]
    assert lr.lower == pytest.approx(5e-4 * lr_retune.LOW_FACTOR)
    assert lr.upper == pytest.approx(5e-4 * lr_retune.HIGH_FACTOR)
    assert lr.lower < 5e-4 < lr.upper
    assert space["retune_of"] == "cell" and space["rank"] == 4
