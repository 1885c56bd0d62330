"""benchmarks.vit_cache runs end to end on a few problems: same predictions, same losses, counters."""
import pytest

from benchmarks import vit_cache


@pytest.mark.slow
def test_the_benchmark_compares_cached_and_pixel_trials(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # prepared data under ./.cache
    out = vit_cache.main(["--train", "16", "--eval", "8", "--rounds", "1", "--no-split"])
    assert list(out)[:2] == ["train_epoch_speedup", "val_test_scoring_speedup"]  # ratios first
    assert out["predictions_identical"] and out["losses_equal"]
    assert out["cache_misses"] > 0 and out["cache_hits"] == 16 + 8 + 8  # one epoch, then val and test
    assert out["problems"] == {"train": 16, "val": 8, "test": 8}
