"""SplitCache: a process's encoded splits, reused by its next trial of the same group."""
import gc
import weakref

from trainables.split_cache import SplitCache, SplitGroup


class Problems(list):
    """A list that a weak reference can follow."""


def _group(prepared="data-abc", llm="tiny-t5", max_prompt_tokens=96):
    return SplitGroup(prepared, 32, llm, None, False, max_prompt_tokens)


def test_a_split_is_loaded_once_per_group_and_limit():
    cache, loads = SplitCache(), []

    def load(value):
        def _load():
            loads.append(value)
            return Problems([value])
        return _load
    first = cache.get(_group(), "train", None, load("a"))
    assert cache.get(_group(), "train", None, load("b")) is first and loads == ["a"]
    assert cache.get(_group(), "train", 8, load("c")) == ["c"]  # another limit: another entry
    assert cache.get(_group(), "val", None, load("d")) == ["d"]
    assert cache.hits == 1


def test_another_group_drops_the_old_one_before_loading():
    cache = SplitCache()
    old = weakref.ref(cache.get(_group(), "train", None, lambda: Problems(["old"])))
    gc.collect()
    assert old() is not None  # kept for the next trial of the group
    seen_during_load = []

    def load_new():
        gc.collect()
        seen_during_load.append(old())
        return Problems(["new"])
    for other in (_group(llm="tiny-llama"), _group(prepared="data-def"), _group(max_prompt_tokens=64)):
        assert cache.get(other, "train", None, load_new) == ["new"]
    assert seen_during_load[0] is None  # never two groups' problems at once
    assert cache.hits == 0
