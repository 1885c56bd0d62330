"""Search spaces: load one by name or from a YAML file, validate it, expand it into trial configs.

Why one place: the sweep must reject a bad space (unknown key, bad rank, a sublayer the method
cannot target, an empty grid) with one clear error BEFORE Ray starts, and the Python spaces in
search_spaces/ and user YAML spaces share one vocabulary. A space is a list of cells
(benchmark, llm, method, sublayer, rank, lr, all in the paper's names) plus recipe overrides that
apply to every cell (epochs, max_train_examples, ...). ``trial_configs`` then maps the paper's
names to what actually runs (offline stand-ins by default) and validates every trial with
``TrialConfig.from_dict``, so nothing reaches a trial that the trial would reject.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.safe_yaml import YamlInputError, load_yaml_file
from trainables.cell import Cell
from trainables.config import TrialConfig
from trainables.excerpt import excerpt
from trainables.methods import METHODS, PeftSetup
from trainables.vocab import OFFLINE_STAND_IN

# Spaces by name: an explicit map (no registry, no import side effects). lr_retune is not a grid:
# it is the distribution orchestrator.retune searches for divergent cells.
SPACE_MODULES: dict[str, str] = {
    "full_grid": "search_spaces.full_grid",
    "qformer_lora": "search_spaces.qformer_lora",
    "llm_lora": "search_spaces.llm_lora",
    "both_lora": "search_spaces.both_lora",
    "baseline": "search_spaces.baseline",
    "smoke": "search_spaces.smoke",
}
CELL_KEYS: tuple[str, ...] = ("benchmark", "llm", "method", "sublayer", "rank", "lr")
"""What identifies a cell in a space (lr: None = the method's default)."""
# Keys a space may set for all its cells: the trial's recipe knobs. Identity, paths and
# bookkeeping (cache_dir, retune_of) are the driver's business, not the space's.
OVERRIDE_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(TrialConfig)
    if f.name not in CELL_KEYS + ("model_path", "data_root", "cache_dir", "retune_of")
) + ("lr",)
YAML_GRID_KEYS: tuple[str, ...] = ("methods", "ranks", "llms", "benchmarks")
PAPER_LLMS: tuple[str, ...] = ("flan-t5-xl", "vicuna-7b")
PAPER_BENCHMARKS: tuple[str, ...] = ("scienceqa", "iconqa")


class SpaceError(ValueError):
    """A search space that cannot run; the message names the file/space, the key and the value."""


@dataclass(frozen=True)
class Space:
    """A validated search space: explicit cells plus overrides shared by all of them."""

    name: str
    """Space name (module name, or the YAML file's stem); names the Ray run."""
    cells: list[dict[str, Any]]
    """One dict per trial with CELL_KEYS, in the paper's names (flan-t5-xl, scienceqa, ...)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Recipe keys applied to every cell (OVERRIDE_KEYS), e.g. epochs."""

    def __post_init__(self) -> None:
        if not self.cells:
            raise SpaceError(f"space {self.name!r}: the grid is empty (no cells)")


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
    return space_from_param_space(name_or_path, module.SPACE)


def space_from_param_space(name: str, param_space: dict[str, Any]) -> Space:
    """Read a module's Ray Tune param space: {"cell": grid_search([...]), **overrides}."""
    cell_spec = param_space.get("cell")
    if not isinstance(cell_spec, dict) or "grid_search" not in cell_spec:
        raise SpaceError(f"space {excerpt(name)}: SPACE needs 'cell': tune.grid_search([cell dicts])")
    overrides = {k: v for k, v in param_space.items() if k != "cell"}
    _check_overrides(name, overrides)
    cells = [_check_cell(name, i, dict(c)) for i, c in enumerate(cell_spec["grid_search"])]
    return Space(name=name, cells=cells, overrides=overrides)


def load_yaml_space(path: Path) -> Space:
    """Parse a YAML space in the shared vocabulary (see docs in README / --help)."""
    try:  # bounded: no aliases, no duplicate keys, regular files of at most 64 KiB
        data = load_yaml_file(path, "space file")
    except YamlInputError as err:
        raise SpaceError(str(err)) from None
    if not isinstance(data, dict):
        raise SpaceError(f"space file {excerpt(str(path), 200)} must hold a mapping with keys "
                         f"{', '.join(YAML_GRID_KEYS)}")
    where = f"space file {excerpt(str(path), 200)}"
    unknown = set(data) - set(YAML_GRID_KEYS) - set(OVERRIDE_KEYS)
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {key_list(unknown)}; allowed: "
                         f"{', '.join(YAML_GRID_KEYS + OVERRIDE_KEYS)}")
    overrides = {k: v for k, v in data.items() if k not in YAML_GRID_KEYS}
    _check_overrides(where, overrides)
    methods = _yaml_methods(where, data.get("methods"))
    llms = _name_list(where, "llms", data.get("llms", list(PAPER_LLMS)), PAPER_LLMS)
    benchmarks = _name_list(where, "benchmarks", data.get("benchmarks", list(PAPER_BENCHMARKS)),
                            PAPER_BENCHMARKS)
    needs_rank = any(m != "baseline" for m, _ in methods)
    ranks = data.get("ranks", [] if not needs_rank else None)
    if needs_rank and ranks is None:
        raise SpaceError(f"{where}: 'ranks' is required for LoRA methods (paper: [1, 2, 4, 8])")
    if not isinstance(ranks, list):
        raise SpaceError(f"{where}: 'ranks' must be a list of positive integers, got {excerpt(ranks)}")
    for rank in ranks:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise SpaceError(f"{where}: bad rank {excerpt(rank)}; ranks must be positive integers")
    lr = overrides.pop("lr", None)
    cells = [
        {"benchmark": b, "llm": llm, "method": m, "sublayer": s, "rank": r, "lr": lr}
        for b in benchmarks for llm in llms for m, subs in methods for s in subs
        for r in ((0,) if m == "baseline" else ranks)
    ]
    if not cells:
        raise SpaceError(f"{where}: the grid is empty (methods x ranks x llms x benchmarks "
                         f"gives no cell)")
    return Space(name=path.stem, cells=cells, overrides=overrides)


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


def _check_overrides(where: str, overrides: dict[str, Any]) -> None:
    unknown = set(overrides) - set(OVERRIDE_KEYS)
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {key_list(unknown)}; allowed: "
                         f"cell, {', '.join(OVERRIDE_KEYS)}")


def key_list(keys: Any, most: int = 8) -> str:
    """Unknown keys for an error message: sorted as text, each and their number bounded."""
    names = sorted(str(k) if len(str(k)) <= 40 else str(k)[:40] + "..." for k in keys)
    more = f" (+{len(names) - most} more)" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _check_cell(where: str, index: int, cell: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(cell) - set(CELL_KEYS))
    missing = sorted(set(CELL_KEYS) - set(cell) - {"lr"})
    if unknown or missing:
        raise SpaceError(f"space {where!r} cell {index}: unknown key(s) {unknown} / missing "
                         f"{missing}; allowed: {', '.join(CELL_KEYS)}")
    try:
        PeftSetup(cell["method"], cell["sublayer"], cell["rank"])
    except ValueError as err:
        raise SpaceError(f"space {where!r} cell {index}: {err}") from None
    cell.setdefault("lr", None)
    return cell


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
                  extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Flat TrialConfig dicts, one per cell, each validated by TrialConfig.from_dict.

    ``extra`` (CLI overrides such as epochs, seed) wins over the space's overrides.
    """
    configs = []
    for cell in space.cells:
        # A cell's own lr wins over a space-wide one; lr None means "the method's default".
        own = {k: v for k, v in cell.items() if not (k == "lr" and v is None)}
        config = {"lr": None, **space.overrides, **own, **targets.llms[cell["llm"]],
                  **targets.benchmarks[cell["benchmark"]], **(extra or {}), "cache_dir": cache_dir}
        try:
            TrialConfig.from_dict(config)
        except ValueError as err:
            raise SpaceError(f"space {space.name!r}, cell {cell_label(cell)}: {err}") from None
        configs.append(config)
    return configs


def cell_label(cell: dict[str, Any]) -> str:
    """The cell id (trainables.cell) of a space cell."""
    return Cell(cell["benchmark"], cell["llm"],
                PeftSetup(cell["method"], cell["sublayer"], cell["rank"])).id


def group_of(config: dict[str, Any]) -> tuple[str, str]:
    """ASHA comparability group of a trial config: (benchmark, llm)."""
    return config["benchmark"], config["llm"]
