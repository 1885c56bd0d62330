"""Per-problem predictions of a trial: the Parquet artifact, its summary metrics and categories.

Why keep every problem: an accuracy alone cannot say whether two cells differ (a paired test
needs per-problem correctness on the same problems), which problems a method gets wrong, or how
it does per ScienceQA leaderboard category. One row per scored problem, for validation (at the
best epoch: the state the test score comes from) and test:

  pid, split, picked_index, answer_index, correct, candidate_nll (summed token NLL of each
  candidate, the rank-classification scores), categories (trainables.data.categories)

The summary metrics a trial reports are computed from the same scores:
  *_gold_nll    mean summed token NLL of the gold candidate (what training minimises);
  *_choice_nll  mean -log softmax(-candidate_nll)[gold]: the log-loss of the rank classifier,
                a finer signal than accuracy on a small split (a problem moves it before it
                flips from wrong to right).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainables.data.categories import ORDER

FILE_NAME = "predictions.parquet"
SCHEMA = pa.schema([
    ("pid", pa.string()), ("split", pa.string()), ("picked_index", pa.int32()),
    ("answer_index", pa.int32()), ("correct", pa.bool_()),
    ("candidate_nll", pa.list_(pa.float64())), ("categories", pa.list_(pa.string())),
])


@dataclass(frozen=True)
class SplitScores:
    """The rank-classification scores of one split, problem by problem (same order)."""

    split: str
    pids: tuple[str, ...]
    answers: tuple[int, ...]
    picked: tuple[int, ...]
    """The candidate the scorer picked (lowest NLL) per problem."""
    scores: tuple[tuple[float, ...], ...]
    """Summed NLL of each candidate, per problem."""

    def __post_init__(self) -> None:
        sizes = {len(self.pids), len(self.answers), len(self.picked), len(self.scores)}
        if len(sizes) != 1:
            raise ValueError(f"split {self.split!r}: pids, answers, picks and score rows do not "
                             f"line up ({len(self.pids)}, {len(self.answers)}, "
                             f"{len(self.picked)}, {len(self.scores)})")

    @property
    def correct(self) -> list[bool]:
        return [p == a for p, a in zip(self.picked, self.answers)]

    def accuracy(self) -> float:
        return sum(self.correct) / max(1, len(self.pids))

    def gold_nll(self) -> float:
        return sum(s[a] for s, a in zip(self.scores, self.answers)) / max(1, len(self.pids))

    def choice_nll(self) -> float:
        total = 0.0
        for s, a in zip(self.scores, self.answers):
            low = min(s)  # log-sum-exp of -s, stable
            total += s[a] - low + math.log(sum(math.exp(low - v) for v in s))
        return total / max(1, len(self.pids))


def predictions_table(parts: Sequence[SplitScores],
                      categories: Mapping[str, Sequence[str]] | None = None) -> pa.Table:
    """One row per problem of every split in ``parts``; ``categories``: pid -> its categories."""
    categories = categories or {}
    cols: dict[str, list] = {name: [] for name in SCHEMA.names}
    for part in parts:
        for pid, pick, ans, ok, row in zip(part.pids, part.picked, part.answers, part.correct,
                                           part.scores):
            for name, value in (("pid", pid), ("split", part.split), ("picked_index", pick),
                                ("answer_index", ans), ("correct", ok),
                                ("candidate_nll", list(row)),
                                ("categories", list(categories.get(pid, ())))):
                cols[name].append(value)
    return pa.table(cols, schema=SCHEMA)


def category_accuracy(table: pa.Table, split: str = "test") -> dict[str, float]:
    """Accuracy per leaderboard category present in ``split`` (trainables.data.categories)."""
    rows = table.filter(pc.equal(table["split"], split)).to_pydict()
    hits: dict[str, list[int]] = {}
    for ok, cats in zip(rows["correct"], rows["categories"]):
        for cat in cats:
            hits.setdefault(cat, []).append(int(ok))
    return {cat: sum(hits[cat]) / len(hits[cat]) for cat in ORDER if cat in hits}


def category_metrics(table: pa.Table, split: str = "test") -> dict[str, float]:
    """``{split}_acc/<category>`` report keys (e.g. test_acc/NAT)."""
    return {f"{split}_acc/{cat}": acc for cat, acc in category_accuracy(table, split).items()}


def write_predictions(table: pa.Table, directory: Path) -> Path:
    Path(directory).mkdir(parents=True, exist_ok=True)
    path = Path(directory) / FILE_NAME
    pq.write_table(table, path, compression="zstd")
    return path


def read_predictions(path: Path) -> pa.Table:
    """A predictions artifact, with a clear error when it is not one."""
    table = pq.read_table(path)
    missing = [n for n in SCHEMA.names if n not in table.schema.names]
    if missing:
        raise ValueError(f"{path} is not a predictions artifact: columns {missing} missing")
    return table
