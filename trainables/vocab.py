"""The vocabulary every part of the project shares: ranks, presets, benchmarks.

Kept in one small module so that the trial config, the search spaces, YAML validation and the
dry-run planner all reject the same unknown values with the same allowed lists.
"""
from __future__ import annotations

from trainables.excerpt import excerpt

# Methods, sublayers and adapter variants are data in trainables.methods.
PAPER_RANKS: tuple[int, ...] = (1, 2, 4, 8)

# Model presets. The tiny ones have the real topology at toy size and need no download; the
# real ones load Salesforce's checkpoints (from the HF cache or a local directory).
TINY_PRESETS: tuple[str, ...] = ("tiny-t5", "tiny-llama")
BENCH_PRESETS: tuple[str, ...] = ("small-t5", "small-llama", "xlsplit-t5")  # tens of millions of params, for benchmarks
REAL_PRESETS: tuple[str, ...] = ("flan-t5-xl", "vicuna-7b")
PRESETS: tuple[str, ...] = TINY_PRESETS + BENCH_PRESETS + REAL_PRESETS
PRESET_FAMILY: dict[str, str] = {
    "tiny-t5": "t5", "small-t5": "t5", "xlsplit-t5": "t5", "flan-t5-xl": "t5",
    "tiny-llama": "llama", "small-llama": "llama", "vicuna-7b": "llama",
}

# Benchmarks. "synth-*" are generated deterministically and embedded; "sample-*" are the small
# real samples shipped in the package (CC BY-NC-SA); the real ones need --data-root.
REAL_BENCHMARKS: tuple[str, ...] = ("scienceqa", "iconqa")
SYNTH_BENCHMARKS: tuple[str, ...] = ("synth-scienceqa", "synth-iconqa")
SAMPLE_BENCHMARKS: tuple[str, ...] = ("sample-scienceqa", "sample-iconqa")
BENCHMARKS: tuple[str, ...] = REAL_BENCHMARKS + SYNTH_BENCHMARKS + SAMPLE_BENCHMARKS

# What the embedded default substitutes for the paper's models and data when run offline.
OFFLINE_STAND_IN: dict[str, str] = {
    "flan-t5-xl": "tiny-t5",
    "vicuna-7b": "tiny-llama",
    "scienceqa": "synth-scienceqa",
    "iconqa": "synth-iconqa",
}


def check_choice(kind: str, value: object, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if allowed, else raise one ValueError naming it and the allowed values."""
    if value not in allowed:
        raise ValueError(f"unknown {kind} {excerpt(value)}; allowed: {', '.join(allowed)}")
    return str(value)

