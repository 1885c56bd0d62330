"""Restoring experiments pickled by earlier versions: the namer's old state, the old modules."""
from __future__ import annotations

import pickle
from types import SimpleNamespace

from orchestrator.driver.tuner import CELL_INDEX, TrialNamer, _Pick, alias_legacy_modules

OLD_CONFIG = {"method": "qformer_lora", "sublayer": "ffn", "rank": 1, "llm": "tiny-t5",
              "benchmark": "synth-iconqa", "lr": None}  # a round-1 config: no adapter keys


def test_a_namer_pickled_with_flat_configs_names_the_same_cells():
    old = TrialNamer.__new__(TrialNamer)
    old.__dict__ = {"configs": [OLD_CONFIG]}  # the attribute the namer had before
    restored = pickle.loads(pickle.dumps(old))
    assert restored.name(SimpleNamespace(config={CELL_INDEX: 0})) == \
        "synth-iconqa|tiny-t5|qformer_lora/ffn|r1"


def test_classes_pickled_under_the_old_module_names_load_after_aliasing():
    text = pickle.dumps(_Pick([OLD_CONFIG], "rank"), protocol=0)
    old_text = text.replace(b"orchestrator.driver.tuner", b"orchestrator.tuner")
    assert old_text != text
    alias_legacy_modules()
    pick = pickle.loads(old_text)
    assert pick({CELL_INDEX: 0}) == 1


def test_the_grouped_schedulers_group_function_loads_by_its_old_module():
    from orchestrator.driver.spaces import group_of
    text = pickle.dumps(group_of, protocol=0).replace(b"orchestrator.driver.spaces",
                                                      b"orchestrator.spaces")
    alias_legacy_modules()
    assert pickle.loads(text)({"benchmark": "b", "llm": "l"}) == ("b", "l")


def test_resume_fits_this_versions_param_space_to_the_experiments_keys(tmp_path):
    from orchestrator.driver.tuner import fit_param_space, grid_param_space, started_param_keys
    from trainables.config import TrialConfig

    trial = TrialConfig.from_dict({**OLD_CONFIG, "cache_dir": "/c"})
    space = grid_param_space([trial])
    exp = tmp_path / "sweep-old"
    exp.mkdir()
    # What Tune keeps in tuner.pkl: the flattened key names only (here: an old sweep's, without
    # the adapter keys and with one key this version no longer has).
    old_keys = ["cell_index/grid_search", "benchmark", "llm", "lr", "method", "rank", "sublayer",
                "retired_key"]
    (exp / "tuner.pkl").write_bytes(pickle.dumps({"__flattened_param_space_keys": old_keys}))
    keys = started_param_keys(str(tmp_path), "sweep-old")
    assert keys == {"cell_index", "benchmark", "llm", "lr", "method", "rank", "sublayer",
                    "retired_key"}
    fitted = fit_param_space(space, keys)
    assert set(fitted) == keys and "adapter" in space and fitted["retired_key"] is None
    assert fitted["rank"] is space["rank"]  # the sample_from picks themselves, resolvable again
    assert fit_param_space(space, None) is space
