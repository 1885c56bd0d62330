"""Seeds: a space's ``seeds`` key and --seeds repeat every cell with consecutive seeds."""
from __future__ import annotations

import pytest

from orchestrator.driver.options import OptionError, SweepOptions
from orchestrator.driver.retune import find_divergent
from orchestrator.driver.spaces import SpaceError, space_from_dict
from orchestrator.driver.targets import resolve_targets, trial_configs
from orchestrator.results.model import DIVERGED, FINISHED, TrialResult
from trainables.cell import parse_cell_id

GRID = {"methods": ["baseline", {"method": "llm_lora", "sublayers": ["attn"]}], "ranks": [1],
        "llms": ["flan-t5-xl"], "benchmarks": ["iconqa"]}


def configs(space_data: dict, **kw):
    space = space_from_dict("s", "space 's'", space_data)
    return trial_configs(space, resolve_targets([], [], []), cache_dir="/c", **kw)


def test_space_seeds_repeat_each_cell_with_consecutive_seeds():
    trials = configs({**GRID, "seeds": 3, "seed": 10})
    assert [(t.cell_id.split("|")[2], t.seed) for t in trials] == [
        ("baseline/none", 10), ("baseline/none", 11), ("baseline/none", 12),
        ("llm_lora/attn", 10), ("llm_lora/attn", 11), ("llm_lora/attn", 12)]
    assert len(configs(GRID)) == 2  # default: one seed


def test_the_option_wins_over_the_space_and_cli_seed_is_the_base():
    trials = configs({**GRID, "seeds": 3}, seeds=2, extra={"seed": 5})
    assert [t.seed for t in trials] == [5, 6, 5, 6]


@pytest.mark.parametrize("bad", [0, -1, 101, 1.5, "2", True])
def test_bad_seed_counts_fail_naming_the_key(bad):
    with pytest.raises(SpaceError, match="'seeds' must be an integer from 1 to 100"):
        configs({**GRID, "seeds": bad})


def test_seeds_option_must_be_positive():
    with pytest.raises(OptionError, match="--seeds must be >= 1"):
        SweepOptions(space="smoke", seeds=0)


def test_a_cell_whose_seeds_all_diverge_is_retuned_once():
    cell = parse_cell_id("synth-iconqa|tiny-t5|llm_lora/attn|r1")
    rows = [TrialResult(cell=cell, status=DIVERGED, best_val_acc=0.1, test_acc=None, seed=s)
            for s in (0, 1)]
    other = TrialResult(cell=parse_cell_id("synth-iconqa|tiny-t5|baseline/none|r0"),
                        status=FINISHED, best_val_acc=0.5, test_acc=0.5)
    assert [r.seed for r, _ in find_divergent(rows + [other])] == [0]
