"""The cell: one point of the ablation grid, and the ONE place its id is written and read.

Resume matching (Tune trials <-> MLflow runs), Table-1 grouping, retune names and run names all
key on the cell id, so it is formatted by ``format_cell_id`` and parsed by ``parse_cell_id``
only. The id of a paper cell (plain LoRA, alpha 8) is ``benchmark|llm|method/sublayer|r<rank>``,
exactly as before adapter variants existed, so old runs and resumes keep matching; another
adapter or alpha rule appends one field: ``...|r4|dora``, ``...|r4|alpha=2r``,
``...|r4|rslora,alpha=2r``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trainables.methods import PAPER_ADAPTER, PAPER_ALPHA, PeftSetup
from trainables.vocab import BENCHMARKS, PRESETS, check_choice


@dataclass(frozen=True)
class Cell:
    """(benchmark, llm, PEFT setup): what a trial measures; its seed and lr are not part of it."""

    benchmark: str
    """Benchmark as the sweep names it (a paper name in a space, the actual one in a trial)."""
    llm: str
    """Model preset, named likewise."""
    peft: PeftSetup

    def __post_init__(self) -> None:
        check_choice("benchmark", self.benchmark, BENCHMARKS)
        check_choice("llm", self.llm, PRESETS)

    @property
    def id(self) -> str:
        return format_cell_id(self)

    @property
    def group(self) -> tuple[str, str]:
        """ASHA comparability group (one scheduler per group): (benchmark, llm)."""
        return self.benchmark, self.llm

    @property
    def group_id(self) -> str:
        return f"{self.benchmark}|{self.llm}"

    @property
    def row_label(self) -> str:
        """Table 1 row (with the llm): method/sublayer[ variant]."""
        return self.peft.row_label

    def display_name(self, names: Callable[[str], str] = str) -> str:
        """Human label, e.g. "scienceqa / flan-t5-xl: both_lora/all dora r4"; ``names`` maps an
        actual preset/benchmark to what it stands for."""
        return (f"{names(self.benchmark)} / {names(self.llm)}: {self.row_label} "
                f"r{self.peft.rank}")


def format_cell_id(cell: Cell) -> str:
    """The cell id (module docstring); the only function that writes one."""
    p = cell.peft
    base = f"{cell.benchmark}|{cell.llm}|{p.method}/{p.sublayer}|r{p.rank}"
    return f"{base}|{p.variant}" if p.variant else base


def parse_cell_id(text: str) -> Cell:
    """Inverse of format_cell_id; a malformed id raises one ValueError quoting it."""
    parts = text.split("|")
    try:
        benchmark, llm, method_sub, rank_text = parts[:4]
        method, sublayer = method_sub.split("/")
        if not rank_text.startswith("r") or len(parts) > 5:
            raise ValueError
        options = {"adapter": PAPER_ADAPTER, "alpha": PAPER_ALPHA}
        for item in (parts[4].split(",") if len(parts) == 5 else []):
            key, sep, value = item.partition("=")
            if sep and key == "alpha":
                options["alpha"] = value
            elif not sep:
                options["adapter"] = key
            else:
                raise ValueError
        cell = Cell(benchmark, llm, PeftSetup(method, sublayer, int(rank_text[1:]), **options))
    except ValueError as err:
        detail = f" ({err})" if str(err) else ""
        raise ValueError(f"malformed cell id {text!r}{detail}; expected "
                         f"benchmark|llm|method/sublayer|r<rank>[|adapter][,alpha=RULE]") from None
    if format_cell_id(cell) != text:  # e.g. "|lora" or "|alpha=fixed8" spelled out
        raise ValueError(f"cell id {text!r} is not canonical; write it {format_cell_id(cell)!r}")
    return cell
