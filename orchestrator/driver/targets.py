"""What the paper's names stand for in a sweep, and the trial configs a space becomes.

Spaces are written in the paper's names (flan-t5-xl, scienceqa); the CLI's --llm, --benchmark
and --data-root say what runs in their place (the offline stand-ins by default). ``trial_configs``
applies that mapping to every cell of a space and returns the validated TrialConfigs the driver
passes on, as objects, until the Ray boundary (tuner.grid_param_space).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.driver.spaces import PAPER_BENCHMARKS, PAPER_LLMS, Space, SpaceError
from trainables.config import TrialConfig
from trainables.excerpt import excerpt
from trainables.vocab import OFFLINE_STAND_IN


@dataclass(frozen=True)
class Targets:
    """What the paper's names stand for in this sweep (offline stand-ins unless told otherwise)."""

    llms: dict[str, dict[str, Any]]
    """Paper LLM -> {"llm": preset, "model_path": dir or None}."""
    benchmarks: dict[str, dict[str, Any]]
    """Paper benchmark -> {"benchmark": name, "data_root": dir or None}."""

    def display_name(self, actual: str) -> str:
        """The paper's name of an actual preset/benchmark (for tables), else ``actual``."""
        for paper, target in {**self.llms, **self.benchmarks}.items():
            if actual in (target.get("llm"), target.get("benchmark")):
                return paper
        return actual


def resolve_targets(llm_args: list[str], benchmark_args: list[str],
                    data_root_args: list[str]) -> Targets:
    """Parse the CLI's PAPER=VALUE mappings on top of the offline stand-ins.

    --llm flan-t5-xl=small-t5 (a preset) | =flan-t5-xl (real, HF cache) | =/dir (real, local dir);
    --benchmark iconqa=sample-iconqa; --data-root scienceqa=/data/sqa (the real benchmark).
    """
    from trainables.vocab import BENCHMARKS, PRESETS  # local: only this function needs them
    llms = {p: {"llm": OFFLINE_STAND_IN[p], "model_path": None} for p in PAPER_LLMS}
    benches = {p: {"benchmark": OFFLINE_STAND_IN[p], "data_root": None} for p in PAPER_BENCHMARKS}
    for paper, value in _pairs("--llm", llm_args, PAPER_LLMS):
        if value in PRESETS:
            llms[paper] = {"llm": value, "model_path": None}
        elif Path(value).is_dir():
            llms[paper] = {"llm": paper, "model_path": str(Path(value).resolve())}
        else:
            raise SpaceError(f"--llm {paper}={value}: neither a preset ({', '.join(PRESETS)}) "
                             f"nor an existing directory")
    for paper, value in _pairs("--benchmark", benchmark_args, PAPER_BENCHMARKS):
        if value not in BENCHMARKS:
            raise SpaceError(f"--benchmark {paper}={value}: unknown benchmark; allowed: "
                             f"{', '.join(BENCHMARKS)}")
        benches[paper] = {"benchmark": value, "data_root": None}
    for paper, value in _pairs("--data-root", data_root_args, PAPER_BENCHMARKS):
        if not Path(value).is_dir():
            raise SpaceError(f"--data-root {paper}={value}: no such directory")
        benches[paper] = {"benchmark": paper, "data_root": str(Path(value).resolve())}
    return Targets(llms=llms, benchmarks=benches)


def _pairs(option: str, args: list[str], allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for arg in args:
        paper, sep, value = arg.partition("=")
        if not sep or paper not in allowed or not value:
            raise SpaceError(f"{option} {excerpt(arg)}: expected NAME=VALUE with NAME in {', '.join(allowed)}")
        out.append((paper, value))
    return out


def trial_configs(space: Space, targets: Targets, *, cache_dir: str,
                  extra: dict[str, Any] | None = None, seeds: int | None = None) -> list[TrialConfig]:
    """Validated TrialConfigs, in the actual names (targets): one per cell and seed, a cell's
    seeds next to each other (seed, seed + 1, ...; ``seeds`` default: the space's).

    ``extra`` (CLI overrides such as epochs, seed) wins over the space's overrides.
    """
    trials = []
    for cell in space.cells:
        p = cell.peft
        config = {**space.overrides, "method": p.method, "sublayer": p.sublayer, "rank": p.rank,
                  "adapter": p.adapter, "alpha": p.alpha, **targets.llms[cell.llm],
                  **targets.benchmarks[cell.benchmark], **(extra or {}), "cache_dir": cache_dir}
        try:
            first = TrialConfig.from_dict(config)
        except ValueError as err:
            raise SpaceError(f"space {space.name!r}, cell {cell.id}: {err}") from None
        trials += [dataclasses.replace(first, seed=first.seed + i) for i in range(seeds or space.seeds)]
    return trials
