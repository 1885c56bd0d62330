"""PEFT methods as data: where LoRA goes (Method), which LoRA variant (Adapter), its alpha rule.

Why data: the trial, the accounting, the planner, the spaces and the tables all ask the same
questions ("does this row train the whole Q-Former?", "does this variant add parameters?").
Each answer is a field here, read by name; nothing compares method strings elsewhere. Adding a
PEFT kind is one ``Adapter`` entry in ``ADAPTERS`` (plus its tests); adding a Table-1 row is one
``Method`` entry in ``METHODS``.

A cell's choice of all three, with its rank, is a ``PeftSetup``; ``PeftSetup.check`` is the one
validation every entry point (trial config, spaces, YAML, accounting) goes through.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMPONENTS: tuple[str, ...] = ("qformer", "llm")
"""Parts of InstructBLIP a method may put LoRA on or train fully (the ViT never trains)."""
ALL = "all"
"""The sublayer meaning "every sublayer pattern of every LoRA component"."""


@dataclass(frozen=True)
class Method:
    """One row family of the paper's Table 1."""

    name: str
    sublayers: tuple[str, ...]
    """Sublayers the method may target, in table order; "all" = every pattern of its components."""
    lora: tuple[str, ...]
    """Components that get LoRA adapters (empty: no LoRA, rank 0)."""
    full: tuple[str, ...] = ()
    """Components whose own weights train fully (the baseline and llm_lora tune the Q-Former)."""

    @property
    def has_lora(self) -> bool:
        return bool(self.lora)

    @property
    def default_sublayer(self) -> str | None:
        """The sublayer a config may omit: the only one, when there is only one."""
        return self.sublayers[0] if len(self.sublayers) == 1 else None

    @property
    def trains_full_qformer(self) -> bool:
        """The paper's lr rule keys on this (the lower rate when the whole Q-Former trains)."""
        return "qformer" in self.full


@dataclass(frozen=True)
class Adapter:
    """One LoRA variant peft implements on the same Linear layers."""

    name: str
    description: str
    lora_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra ``peft.LoraConfig`` arguments (on top of r, lora_alpha, dropout, targets)."""
    magnitude_per_linear: bool = False
    """Adds one trainable magnitude vector (out_features values) per adapted Linear (DoRA)."""


@dataclass(frozen=True)
class AlphaRule:
    """``lora_alpha = constant + per_rank * r`` (scale alpha / r; rsLoRA: alpha / sqrt(r))."""

    name: str
    constant: float
    per_rank: float

    def alpha(self, rank: int) -> float:
        return self.constant + self.per_rank * rank


METHODS: dict[str, Method] = {m.name: m for m in (
    # No LoRA: the Q-Former is fully fine-tuned (InstructBLIP's own recipe).
    Method("baseline", sublayers=("none",), lora=(), full=("qformer",)),
    Method("llm_lora", sublayers=("ffn", "attn", ALL), lora=("llm",), full=("qformer",)),
    Method("qformer_lora", sublayers=("ffn", "self_attn", "cross_attn", ALL), lora=("qformer",)),
    Method("both_lora", sublayers=(ALL,), lora=("qformer", "llm")),
)}

PAPER_ADAPTER = "lora"
"""The paper's plain LoRA; a cell id names its adapter only when it is another one."""
ADAPTERS: dict[str, Adapter] = {a.name: a for a in (
    Adapter("lora", "plain LoRA (the paper): B = 0, A Kaiming-uniform, scale alpha / r"),
    Adapter("dora", "DoRA: weight-decomposed LoRA, a learned magnitude per output feature",
            {"use_dora": True}, magnitude_per_linear=True),
    Adapter("rslora", "rank-stabilised LoRA: scale alpha / sqrt(r)", {"use_rslora": True}),
    Adapter("pissa", "PiSSA: A, B from the top-r singular vectors of W, the base keeps the "
            "residual", {"init_lora_weights": "pissa"}),
)}

PAPER_ALPHA = "fixed8"
"""The paper keeps lora_alpha = 8 at every rank (so alpha / r falls eightfold from r=1 to 8)."""
ALPHA_RULES: dict[str, AlphaRule] = {a.name: a for a in (
    AlphaRule("fixed8", constant=8, per_rank=0),
    AlphaRule("2r", constant=0, per_rank=2),  # constant scale 2 at every rank
)}


def _choice(kind: str, value: object, table: dict[str, Any]) -> Any:
    if value not in table:
        raise ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(table)}")
    return table[value]


def method_spec(name: str) -> Method:
    """The Method named ``name``; one error naming it and the allowed ones otherwise."""
    return _choice("method", name, METHODS)


def adapter_spec(name: str) -> Adapter:
    return _choice("adapter", name, ADAPTERS)


def alpha_rule(name: str) -> AlphaRule:
    return _choice("alpha rule", name, ALPHA_RULES)


@dataclass(frozen=True)
class PeftSetup:
    """What one cell adapts and how: method, sublayer, rank, adapter, alpha rule."""

    method: str
    sublayer: str
    rank: int
    adapter: str = PAPER_ADAPTER
    alpha: str = PAPER_ALPHA

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Reject unknown names, a sublayer the method lacks, a bad rank, or LoRA options on a
        method without LoRA, each with one error naming the value and what is allowed."""
        spec = method_spec(self.method)
        if self.sublayer not in spec.sublayers:
            raise ValueError(f"sublayer {self.sublayer!r} is not valid for method "
                             f"{self.method!r}; allowed: {', '.join(spec.sublayers)}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int):
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        adapter_spec(self.adapter)
        alpha_rule(self.alpha)
        if spec.has_lora and self.rank <= 0:
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        if not spec.has_lora:
            for name, value, plain in (("rank", self.rank, 0), ("adapter", self.adapter, PAPER_ADAPTER),
                                       ("alpha", self.alpha, PAPER_ALPHA)):
                if value != plain:
                    raise ValueError(f"method {self.method!r} has no LoRA, so its {name} must be "
                                     f"{plain!r}, got {value!r}")

    @property
    def spec(self) -> Method:
        return METHODS[self.method]

    @property
    def adapter_spec(self) -> Adapter:
        return ADAPTERS[self.adapter]

    @property
    def lora_alpha(self) -> float:
        return ALPHA_RULES[self.alpha].alpha(self.rank)

    @property
    def is_paper_lora(self) -> bool:
        """Plain LoRA with the paper's alpha: what every cell id before adapters described."""
        return self.adapter == PAPER_ADAPTER and self.alpha == PAPER_ALPHA

    @property
    def variant(self) -> str:
        """"" for the paper's LoRA, else e.g. "dora", "alpha=2r" or "rslora,alpha=2r"."""
        parts = [] if self.adapter == PAPER_ADAPTER else [self.adapter]
        parts += [] if self.alpha == PAPER_ALPHA else [f"alpha={self.alpha}"]
        return ",".join(parts)

    @property
    def row_label(self) -> str:
        """Table 1 / Figure 2 row: method/sublayer, plus the variant when not plain LoRA."""
        base = f"{self.method}/{self.sublayer}"
        return f"{base} {self.variant}" if self.variant else base


def table_rows() -> list[tuple[str, str]]:
    """(method, sublayer) of every Table-1 row, in table order."""
    return [(m.name, s) for m in METHODS.values() for s in m.sublayers]


def row_order(peft: PeftSetup) -> tuple[int, int, int]:
    """Sort key of table rows: Table-1 row order, then adapter, then alpha rule (data order)."""
    return (table_rows().index((peft.method, peft.sublayer)), list(ADAPTERS).index(peft.adapter),
            list(ALPHA_RULES).index(peft.alpha))
