"""Search spaces: load one by name or from a YAML file, validate it, expand it into trial configs.

Why one place: the sweep must reject a bad space (unknown key, bad rank, a sublayer the method
cannot target, an empty grid) with one clear error BEFORE Ray starts. The Python spaces in
search_spaces/ and user YAML spaces are the same plain data in one vocabulary, read by one
function (``space_from_dict``):

    methods: [baseline, {method: qformer_lora, sublayers: [ffn, all]}]   # default sublayers: all
    ranks: [1, 2, 4, 8]                  # required when a method has LoRA
    adapters: [lora, dora]               # trainables.methods.ADAPTERS; default [lora]
    alphas: [fixed8, 2r]                 # trainables.methods.ALPHA_RULES; default [fixed8]
    llms: [flan-t5-xl, vicuna-7b]        # the paper's names; default both
    benchmarks: [scienceqa, iconqa]      # the paper's names; default both
    epochs: 4                            # any recipe key of TrialConfig applies to every cell
    seeds: 3                             # each cell N times, seeds seed, seed+1, ... (default 1)

or, instead of the grid keys, an explicit ``cells: [{benchmark, llm, method, sublayer, rank[,
adapter, alpha]}, ...]``. A space is a list of ``Cell`` (paper names) plus those overrides;
``orchestrator.driver.targets.trial_configs`` maps the paper's names to what actually runs (the
offline stand-ins by default) and validates every trial as a ``TrialConfig``, so nothing
reaches a trial that it would reject.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.driver.safe_yaml import YamlInputError, load_yaml_file
from trainables.cell import Cell
from trainables.config import TrialConfig
from trainables.excerpt import excerpt
from trainables.methods import ADAPTERS, ALPHA_RULES, METHODS, PAPER_ADAPTER, PAPER_ALPHA, PeftSetup

# Spaces by name: an explicit map (no registry, no import side effects). lr_retune is not a grid:
# it is the distribution orchestrator.driver.retune searches for divergent cells.
SPACE_MODULES: dict[str, str] = {
    "full_grid": "search_spaces.full_grid",
    "qformer_lora": "search_spaces.qformer_lora",
    "llm_lora": "search_spaces.llm_lora",
    "both_lora": "search_spaces.both_lora",
    "baseline": "search_spaces.baseline",
    "adapters": "search_spaces.adapters",
    "smoke": "search_spaces.smoke",
}
CELL_KEYS: tuple[str, ...] = ("benchmark", "llm", "method", "sublayer", "rank", "adapter", "alpha")
"""What identifies a cell (trainables.cell.Cell); adapter and alpha default to the paper's."""
# Keys a space may set for all its cells: the trial's recipe knobs. Identity, paths and
# bookkeeping (cache_dir, vit_cache_dir, retune_of) are the driver's business, not the space's.
OVERRIDE_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(TrialConfig)
    if f.name not in CELL_KEYS + ("model_path", "data_root", "cache_dir", "vit_cache_dir", "retune_of"))
GRID_KEYS: tuple[str, ...] = ("methods", "ranks", "adapters", "alphas", "llms", "benchmarks")
CELLS_KEY = "cells"
SEEDS_KEY = "seeds"
MAX_SEEDS = 100
"""More repeats than this is a typo, not an experiment."""
PAPER_LLMS: tuple[str, ...] = ("flan-t5-xl", "vicuna-7b")
PAPER_BENCHMARKS: tuple[str, ...] = ("scienceqa", "iconqa")


class SpaceError(ValueError):
    """A search space that cannot run; the message names the file/space, the key and the value."""


@dataclass(frozen=True)
class Space:
    """A validated search space: its cells (paper names) plus overrides shared by all of them."""

    name: str
    """Space name (module name, or the YAML file's stem); names the Ray run."""
    cells: list[Cell]
    """One cell per grid trial, in order, in the paper's names (flan-t5-xl, scienceqa, ...)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Recipe keys applied to every cell (OVERRIDE_KEYS), e.g. epochs or lr."""
    seeds: int = 1
    """Trials per cell, seeds seed .. seed + seeds - 1 (mean +- sd in Table 1)."""

    def __post_init__(self) -> None:
        if not self.cells:
            raise SpaceError(f"space {self.name!r}: the grid is empty (no cells)")
        check_seeds(f"space {self.name!r}: {SEEDS_KEY!r}", self.seeds)


def check_seeds(where: str, seeds: Any) -> int:
    """A number of seeds per cell: an integer in [1, MAX_SEEDS] (else SpaceError naming it)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise SpaceError(f"{where} must be an integer from 1 to {MAX_SEEDS}, got {excerpt(repr(seeds))}")
    return seeds


def load_space(name_or_path: str) -> Space:
    """A space by name (SPACE_MODULES) or from a .yaml/.yml file; raises SpaceError."""
    if name_or_path.endswith((".yaml", ".yml")):
        return load_yaml_space(Path(name_or_path))
    if name_or_path not in SPACE_MODULES:
        hint = " (lr_retune is the re-tuning distribution, used after a grid)" \
            if name_or_path == "lr_retune" else ""
        raise SpaceError(f"unknown space {excerpt(name_or_path)}{hint}; allowed: "
                         f"{', '.join(SPACE_MODULES)} or a FILE.yaml")
    module = importlib.import_module(SPACE_MODULES[name_or_path])
    return space_from_dict(name_or_path, f"space {name_or_path!r}", module.SPACE)


def load_yaml_space(path: Path) -> Space:
    """Parse a YAML space (module docstring)."""
    try:  # bounded: no aliases, no duplicate keys, regular files of at most 64 KiB
        data = load_yaml_file(path, "space file")
    except YamlInputError as err:
        raise SpaceError(str(err)) from None
    return space_from_dict(path.stem, f"space file {excerpt(str(path), 200)}", data)


def space_from_dict(name: str, where: str, data: Any) -> Space:
    """The one reader of the space format (module docstring); ``where`` prefixes its errors."""
    if not isinstance(data, dict):
        raise SpaceError(f"{where} must hold a mapping with keys {', '.join(GRID_KEYS)} (or "
                         f"{CELLS_KEY})")
    unknown = set(data) - set(GRID_KEYS) - {CELLS_KEY, SEEDS_KEY} - set(OVERRIDE_KEYS)
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {key_list(unknown)}; allowed: "
                         f"{', '.join(GRID_KEYS + (CELLS_KEY, SEEDS_KEY) + OVERRIDE_KEYS)}")
    seeds = check_seeds(f"{where}: {SEEDS_KEY!r}", data.get(SEEDS_KEY, 1))
    overrides = {k: v for k, v in data.items() if k in OVERRIDE_KEYS}
    if CELLS_KEY in data:
        both = sorted(set(data) & set(GRID_KEYS))
        if both:
            raise SpaceError(f"{where}: {CELLS_KEY!r} lists cells explicitly; it cannot be "
                             f"combined with grid key(s) {', '.join(both)}")
        cells = _explicit_cells(where, data[CELLS_KEY])
    else:
        cells = _grid_cells(where, data)
    if not cells:
        raise SpaceError(f"{where}: the grid is empty (methods x ranks x llms x benchmarks "
                         f"gives no cell)")
    return Space(name=name, cells=cells, overrides=overrides, seeds=seeds)


def _grid_cells(where: str, data: dict[str, Any]) -> list[Cell]:
    """Expand the grid keys, in the order benchmark, llm, method, sublayer, adapter, alpha, rank
    (a method without LoRA: one cell, rank 0, the paper's adapter)."""
    methods = _yaml_methods(where, data.get("methods"))
    llms = _name_list(where, "llms", data.get("llms", list(PAPER_LLMS)), PAPER_LLMS)
    benchmarks = _name_list(where, "benchmarks", data.get("benchmarks", list(PAPER_BENCHMARKS)),
                            PAPER_BENCHMARKS)
    adapters = _name_list(where, "adapters", data.get("adapters", [PAPER_ADAPTER]),
                          tuple(ADAPTERS))
    alphas = _name_list(where, "alphas", data.get("alphas", [PAPER_ALPHA]), tuple(ALPHA_RULES))
    ranks = _ranks(where, data, needed=any(METHODS[m].has_lora for m, _ in methods))
    pefts = [PeftSetup(m, s, r, a, al) if METHODS[m].has_lora else PeftSetup(m, s, 0)
             for m, subs in methods for s in subs
             for a, al, r in ([(a, al, r) for a in adapters for al in alphas for r in ranks]
                              if METHODS[m].has_lora else [(PAPER_ADAPTER, PAPER_ALPHA, 0)])]
    return [Cell(b, llm, p) for b in benchmarks for llm in llms for p in pefts]


def _ranks(where: str, data: dict[str, Any], needed: bool) -> list[int]:
    ranks = data.get("ranks", [] if not needed else None)
    if needed and ranks is None:
        raise SpaceError(f"{where}: 'ranks' is required for LoRA methods (paper: [1, 2, 4, 8])")
    if not isinstance(ranks, list):
        raise SpaceError(f"{where}: 'ranks' must be a list of positive integers, got "
                         f"{excerpt(ranks)}")
    for rank in ranks:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise SpaceError(f"{where}: bad rank {excerpt(rank)}; ranks must be positive integers")
    return ranks


def _explicit_cells(where: str, raw: Any) -> list[Cell]:
    if not isinstance(raw, list):
        raise SpaceError(f"{where}: {CELLS_KEY!r} must be a list of cells, got {excerpt(raw)}")
    cells = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise SpaceError(f"{where} cell {index}: expected a mapping, got {excerpt(entry)}")
        unknown = set(entry) - set(CELL_KEYS)
        missing = sorted(set(CELL_KEYS[:5]) - set(entry))
        if unknown or missing:
            raise SpaceError(f"{where} cell {index}: unknown key(s) {key_list(unknown) or '-'} / "
                             f"missing {', '.join(missing) or '-'}; allowed: {', '.join(CELL_KEYS)}")
        _name_list(f"{where} cell {index}", "llms", [entry["llm"]], PAPER_LLMS)
        _name_list(f"{where} cell {index}", "benchmarks", [entry["benchmark"]], PAPER_BENCHMARKS)
        try:
            peft = PeftSetup(entry["method"], entry["sublayer"], entry["rank"],
                             entry.get("adapter", PAPER_ADAPTER), entry.get("alpha", PAPER_ALPHA))
        except ValueError as err:
            raise SpaceError(f"{where} cell {index}: {err}") from None
        cells.append(Cell(entry["benchmark"], entry["llm"], peft))
    return cells


def _yaml_methods(where: str, raw: Any) -> list[tuple[str, tuple[str, ...]]]:
    """methods: [baseline, {method: qformer_lora, sublayers: [ffn, all]}, ...]; sublayers
    default to every sublayer of the method."""
    if not isinstance(raw, list):
        raise SpaceError(f"{where}: 'methods' must be a list (of names or "
                         f"{{method: NAME, sublayers: [...]}}), got {excerpt(raw)}")
    out = []
    for entry in raw:
        if isinstance(entry, str):
            entry = {"method": entry}
        if not isinstance(entry, dict) or "method" not in entry:
            raise SpaceError(f"{where}: bad methods entry {excerpt(entry)}; expected a method name or "
                             f"{{method: NAME, sublayers: [...]}}")
        extra = set(entry) - {"method", "sublayers"}
        if extra:
            raise SpaceError(f"{where}: unknown key(s) {key_list(extra)} in methods entry; "
                             f"allowed: method, sublayers")
        method = entry["method"]
        if method not in METHODS:
            raise SpaceError(f"{where}: unknown method {excerpt(method)}; allowed: {', '.join(METHODS)}")
        subs = entry.get("sublayers", list(METHODS[method].sublayers))
        if not isinstance(subs, list) or not subs:
            raise SpaceError(f"{where}: sublayers of {method} must be a non-empty list")
        for sub in subs:
            if sub not in METHODS[method].sublayers:
                raise SpaceError(f"{where}: sublayer {excerpt(sub)} does not exist for {method}; "
                                 f"allowed: {', '.join(METHODS[method].sublayers)}")
        out.append((method, tuple(subs)))
    return out


def _name_list(where: str, key: str, raw: Any, allowed: tuple[str, ...]) -> list[str]:
    if not isinstance(raw, list):
        raise SpaceError(f"{where}: {key!r} must be a list, got {excerpt(raw)}")
    for name in raw:
        if name not in allowed:
            raise SpaceError(f"{where}: unknown {key[:-1]} {excerpt(name)}; allowed: {', '.join(allowed)}")
    return raw


def key_list(keys: Any, most: int = 8) -> str:
    """Unknown keys for an error message: sorted as text, each and their number bounded."""
    names = sorted(str(k) if len(str(k)) <= 40 else str(k)[:40] + "..." for k in keys)
    more = f" (+{len(names) - most} more)" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def group_of(config: dict[str, Any]) -> tuple[str, str]:
    """ASHA comparability group of a trial config: (benchmark, llm)."""
    return config["benchmark"], config["llm"]
