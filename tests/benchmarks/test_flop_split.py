"""The xlsplit-t5 preset spends its work like Flan-T5-XL: the ViT : Q-Former : LLM FLOP split per
problem, training and scoring, counted by torch on both (XL on shape-only fake tensors)."""
import pytest

from benchmarks import flop_split


@pytest.mark.slow
def test_xlsplit_matches_flan_t5_xl_within_ten_percent(tmp_path):
    xl = flop_split.real_split("flan-t5-xl")
    mine = flop_split.toy_preset_split("xlsplit-t5", "synth-iconqa", n=4, cache_dir=str(tmp_path))
    assert xl["train"].shares()["vit"] > 0.45 and xl["score"].shares()["vit"] > 0.6  # what the cache skips
    for phase in ("train", "score"):
        a, b = mine[phase].shares(), xl[phase].shares()
        assert all(abs(a[k] / b[k] - 1) <= 0.10 for k in a), (phase, a, b)
