"""The encoded splits of the benchmark a process last trained on, kept for its next trial.

Why: Ray Tune runs a process's next trial in the same actor (``reuse_actors``), and the grid's
consecutive trials mostly share their benchmark and LLM. Decoding every image and tokenising
every prompt again was half of a tiny trial's setup (~0.3 of ~0.6 s, 132 times in the embedded
grid, and again for each ASHA-stopped trial scored afterwards). What the encoding depends on is
the key: the prepared data directory (its name holds the content hash), the split and its size
limit, the image size, the tokenizers (preset, checkpoint, stand-ins) and the prompt cap.

One group (everything but the split and its limit) is kept at a time, and it is dropped
*before* another is loaded, so a real benchmark's decoded images are never held twice. The
problems are frozen dataclasses whose images are only read (transforms copy them), so trials
can share them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SplitGroup:
    """Everything an encoded split depends on besides the split and its limit."""

    prepared: str
    """The prepared benchmark directory (trainables.data.prepare: named by content hash)."""
    image_size: int
    llm: str
    """The preset: with ``model_path`` and ``random_weights``, which tokenizers encode."""
    model_path: str | None
    random_weights: bool
    max_prompt_tokens: int


class SplitCache:
    """Encoded splits of one SplitGroup, per (split, limit)."""

    def __init__(self) -> None:
        self._group: SplitGroup | None = None
        self._splits: dict[tuple[str, int | None], Any] = {}
        self.hits = 0
        """Splits served from the cache (tests and the curious)."""

    def get(self, group: SplitGroup, split: str, limit: int | None, load: Callable[[], Any]) -> Any:
        """The split's value, from ``load()`` the first time for this group."""
        if group != self._group:
            self._splits.clear()  # before loading: never two groups' images at once
            self._group = group
        key = (split, limit)
        if key in self._splits:
            self.hits += 1
        else:
            self._splits[key] = load()
        return self._splits[key]
