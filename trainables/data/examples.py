"""What a trial consumes: prepared rows with the image decoded once, kept as uint8.

Images are decoded from the stored PNG bytes a single time per load and resized to a square
side S = image_size (the model's input size); training crops are taken from that S x S image
by ImageTransform on every batch, so no PNG is decoded twice in a trial.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from trainables.data.images import decode_image
from trainables.data.prepare import read_split_table

_COLUMNS = ["pid", "image", "prompt", "qformer_text", "candidates", "answer_index"]


@dataclass(frozen=True)
class Example:
    """One problem ready for batching."""

    pid: str
    image: torch.Tensor
    """uint8 (3, S, S), S = the image_size passed to load_examples."""
    prompt: str
    """Exact LLM text after the image tokens (batching prepends num_query_tokens of them)."""
    qformer_text: str
    """Instruction text fed to the Q-Former."""
    candidates: tuple[str, ...]
    """Labelled options `(a) text`, scored by the ranking evaluation."""
    answer_index: int
    """Index of the correct candidate (the training target is candidates[answer_index])."""


def load_examples(prepared_dir: str | Path, split: str, image_size: int, limit: int | None = None) -> list[Example]:
    """The first `limit` (all if None) examples of a prepared split, images decoded once."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    table = read_split_table(prepared_dir, split, _COLUMNS)
    if limit is not None:
        table = table.slice(0, limit)
    cols = table.to_pydict()
    return [Example(pid=cols["pid"][i], image=decode_image(cols["image"][i], image_size),
                    prompt=cols["prompt"][i], qformer_text=cols["qformer_text"][i],
                    candidates=tuple(cols["candidates"][i]), answer_index=cols["answer_index"][i])
            for i in range(table.num_rows)]
