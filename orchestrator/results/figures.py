"""The report's figures: accuracy vs trainable fraction (Figure 2) and learning curves.

Matplotlib with the Agg backend through ``Figure`` objects (no pyplot state), so figures can
be drawn in a headless driver or a test and the caller decides where the PNG goes.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from trainables.methods import ADAPTERS, ALPHA_RULES, PeftSetup, row_order, table_rows

# One colour and marker per Table 1 row method (method/sublayer), stable across figures; an
# adapter variant keeps its row's colour and gets a marker of its own.
ROW_METHODS: tuple[str, ...] = tuple(f"{m}/{s}" for m, s in table_rows())
_COLOURS = ("black", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
            "tab:pink", "tab:olive", "tab:cyan")
_MARKERS = ("s", "o", "^", "D", "v", "<", ">", "P", "X", "*")
_VARIANT_MARKERS = ("h", "p", "8", "d", "H", "x", "+", "1", "2", "3", "4")
STYLE = {name: (_COLOURS[i % len(_COLOURS)], _MARKERS[i % len(_MARKERS)])
         for i, name in enumerate(ROW_METHODS)}


def style(peft: PeftSetup) -> tuple[str, str]:
    """(colour, marker) of a row: its method/sublayer's, the marker per adapter variant."""
    colour, marker = STYLE[f"{peft.method}/{peft.sublayer}"]
    if peft.is_paper_lora:
        return colour, marker
    variant = list(ADAPTERS).index(peft.adapter) * len(ALPHA_RULES) \
        + list(ALPHA_RULES).index(peft.alpha) - 1
    return colour, _VARIANT_MARKERS[variant % len(_VARIANT_MARKERS)]


@dataclass(frozen=True)
class Point:
    """One trial in Figure 2."""

    group: str  # "benchmark|llm": one panel each
    peft: PeftSetup  # its row (method/sublayer and adapter variant); the rank is the point's
    fraction: float  # trainable parameters / all parameters of the model
    accuracy: float  # percent
    from_val: bool  # True: a stopped trial, best validation accuracy instead of test accuracy
    superseded: bool  # Table 1 shows another run for its cell (drawn faint, not on the front)


def _rows(pefts: Iterable[PeftSetup]) -> list[str]:
    """Distinct row labels in table order."""
    by_label = {p.row_label: p for p in pefts}
    return sorted(by_label, key=lambda label: row_order(by_label[label]))


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Points no other point beats on both axes (fewer trainable parameters, higher accuracy)."""
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (p.fraction, -p.accuracy)):
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def _panels(groups: Sequence[str], width: float = 5.5, height: float = 4.2) -> tuple[Figure, list]:
    """One panel per (benchmark, LLM) group, two per row (the paper's 2 x 2 grid)."""
    ncols = min(2, max(1, len(groups)))
    nrows = max(1, -(-len(groups) // ncols))
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    return fig, axes


def _scatter(ax, sel: Sequence[Point], from_val: bool, superseded: bool) -> None:
    """Filled: test accuracy; hollow: best validation accuracy of a stopped trial; faint: a
    trial whose cell Table 1 fills with another run (replaced by a retune, or a losing retune)."""
    colour, marker = style(sel[0].peft)
    label = sel[0].peft.row_label + (" (best val acc: stopped)" if from_val else "") \
        + (" (not in Table 1)" if superseded else "")
    ax.scatter([p.fraction for p in sel], [p.accuracy for p in sel], label=label, marker=marker,
               s=36, edgecolors=colour, facecolors="none" if from_val else colour,
               alpha=0.3 if superseded else 1.0)


def _percent_log_axis(ax) -> None:
    """Log x axis labelled in percent at 1-2-5 steps (default log labels collide when the
    fractions span less than a decade, as they do within one model)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(LogLocator(subs=tuple(range(1, 10))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * x:.3g}%"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))


def accuracy_vs_fraction(points: Sequence[Point]) -> Figure:
    """Figure 2: per (benchmark, LLM) panel, one marker per trial and the Pareto front."""
    groups = sorted({p.group for p in points})
    fig, axes = _panels(groups)
    for ax, group in zip(axes, groups):
        mine = [p for p in points if p.group == group]
        for row in _rows(p.peft for p in mine):
            for from_val, superseded in ((False, False), (True, False), (False, True),
                                         (True, True)):
                sel = [p for p in mine if p.peft.row_label == row and p.from_val == from_val
                       and p.superseded == superseded]
                if sel:
                    _scatter(ax, sel, from_val, superseded)
        front = pareto_front([p for p in mine if not p.superseded])
        ax.plot([p.fraction for p in front], [p.accuracy for p in front], "k--", lw=1,
                drawstyle="steps-post", label="Pareto front", zorder=0)
        _percent_log_axis(ax)
        ax.set_title(group.replace("|", "  ·  "))
        ax.set_xlabel("trainable parameters, % of all parameters (log scale)")
        ax.set_ylabel("accuracy % (test; hollow: best val)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("Accuracy vs trainable parameters (one point per trial)")
    return fig


@dataclass(frozen=True)
class Curve:
    """One trial's validation accuracy per epoch."""

    group: str
    peft: PeftSetup
    label: str
    epochs: tuple[int, ...]
    val_acc: tuple[float, ...]  # percent


def learning_curves(curves: Sequence[Curve]) -> Figure:
    """Validation accuracy per epoch, one line per trial, one panel per (benchmark, LLM)."""
    groups = sorted({c.group for c in curves})
    fig, axes = _panels(groups)
    for ax, group in zip(axes, groups):
        seen: set[str] = set()
        for c in (c for c in curves if c.group == group):
            colour, marker = style(c.peft)
            row = c.peft.row_label
            label = row if row not in seen else None
            seen.add(row)
            ax.plot(c.epochs, c.val_acc, color=colour, marker=marker, ms=3, lw=1, alpha=0.8,
                    label=label)
        ax.set_title(group.replace("|", "  ·  "))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("validation accuracy %")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("Learning curves")
    return fig
