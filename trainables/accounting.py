"""Parameter accounting per model + method + rank, and the 9 methods x 4 ranks table.

Why: the paper's efficiency claims (Q-Former LoRA trains under 2% of the Q-Former; LoRA on
both parts trains under ~10% of InstructBLIP's trainable parameters) are checked from these
counts, every trial reports them, and the planner prints them before anything trains.

The counts are analytic (parameter shapes only: no data, no peft wrapper), so they work on
meta-device models of the real checkpoints and cost milliseconds per cell. A test checks that
they equal what ``apply_method`` actually leaves trainable.

CLI: ``python -m trainables.accounting --llm flan-t5-xl`` prints the table for one preset.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass

from torch import nn

from trainables.peft_targeting import (
    FAMILIES, base_model_of, full_trainable_prefixes, check_cell, is_lora_param, lora_param_count,
)
from trainables.vocab import METHOD_SUBLAYERS, PAPER_RANKS, PRESET_FAMILY, PRESETS, check_choice


@dataclass(frozen=True)
class ParamReport:
    """Parameter counts of one (model, method, sublayer, rank) cell."""

    trainable: int
    """Parameters that receive gradients (LoRA A/B + fully trained tensors)."""
    total: int
    """All parameters of the trained model: base model + LoRA tensors."""
    trainable_fraction: float
    """trainable / total."""
    baseline_trainable: int
    """Trainable parameters of the baseline (InstructBLIP: full Q-Former fine-tune)."""
    fraction_of_baseline: float
    """trainable / baseline_trainable (the paper's efficiency ratio)."""
    lora_params_qformer: int
    """LoRA parameters inside the Q-Former."""
    lora_params_llm: int
    """LoRA parameters inside the LLM."""
    qformer_total: int
    """Parameters of the Q-Former itself (``qformer.*`` plus the learned query tokens)."""
    qformer_trainable_fraction: float
    """Trainable Q-Former parameters (its LoRA or its full weights) / qformer_total."""

    def as_metrics(self) -> dict[str, float | int]:
        """Flat dict for ``ray.tune.report`` / MLflow (field names unchanged)."""
        return asdict(self)


def _strip_base_layer(name: str) -> str:
    return name.replace(".base_layer.", ".")


def base_sizes(model: nn.Module) -> dict[str, int]:
    """Base (non-LoRA) parameter sizes by name, with peft's ``.base_layer.`` removed.

    Works for a plain or a peft-wrapped model, so a report can be made at any time.
    """
    return {_strip_base_layer(n): p.numel() for n, p in base_model_of(model).named_parameters()
            if not is_lora_param(n)}


def count_parameters(model: nn.Module, method: str, sublayer: str, rank: int, family: str) -> ParamReport:
    """Analytic ParamReport of ``model`` (plain, peft-wrapped, or on the meta device)."""
    check_cell(method, sublayer, rank)
    check_choice("family", family, FAMILIES)
    sizes = base_sizes(model)

    def by_prefix(prefixes: tuple[str, ...]) -> int:
        return sum(v for n, v in sizes.items() if n.startswith(prefixes))

    lora = lora_param_count(model, method, sublayer, family, rank) if method != "baseline" \
        else {"qformer": 0, "llm": 0}
    full = by_prefix(full_trainable_prefixes(method))
    trainable = full + lora["qformer"] + lora["llm"]
    total = sum(sizes.values()) + lora["qformer"] + lora["llm"]
    baseline = by_prefix(full_trainable_prefixes("baseline"))
    qformer_total = by_prefix(("qformer.", "query_tokens"))
    qformer_full = by_prefix(("qformer.",)) if method in ("baseline", "llm_lora") else 0
    qformer_trainable = qformer_full + lora["qformer"] + sizes.get("query_tokens", 0)
    return ParamReport(
        trainable=trainable, total=total, trainable_fraction=trainable / total,
        baseline_trainable=baseline, fraction_of_baseline=trainable / baseline,
        lora_params_qformer=lora["qformer"], lora_params_llm=lora["llm"],
        qformer_total=qformer_total, qformer_trainable_fraction=qformer_trainable / qformer_total,
    )


def measured_trainable(model: nn.Module) -> int:
    """Parameters with requires_grad, counted on the model as it is (for cross-checks)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def all_cells(ranks: tuple[int, ...] = PAPER_RANKS) -> list[tuple[str, str, int]]:
    """(method, sublayer, rank) of the 9 Table-1 rows; the baseline once with rank 0."""
    cells = []
    for method, sublayers in METHOD_SUBLAYERS.items():
        for sublayer in sublayers:
            cells += [(method, sublayer, 0)] if method == "baseline" else \
                [(method, sublayer, r) for r in ranks]
    return cells


def table(model: nn.Module, family: str, ranks: tuple[int, ...] = PAPER_RANKS) -> list[dict]:
    """One row per cell: method, sublayer, rank and the ParamReport fields."""
    return [{"method": m, "sublayer": s, "rank": r, **asdict(count_parameters(model, m, s, r, family))}
            for m, s, r in all_cells(ranks)]


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table of ``table(...)`` rows."""
    head = (f"{'method':<13}{'sublayer':<11}{'r':>2} {'trainable':>13} {'% total':>8} "
            f"{'% baseline':>10} {'% Q-Former':>10} {'LoRA Q-Former':>14} {'LoRA LLM':>12}")
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row['method']:<13}{row['sublayer']:<11}{row['rank']:>2} {row['trainable']:>13,} "
            f"{100 * row['trainable_fraction']:>8.3f} {100 * row['fraction_of_baseline']:>10.2f} "
            f"{100 * row['qformer_trainable_fraction']:>10.3f} {row['lora_params_qformer']:>14,} "
            f"{row['lora_params_llm']:>12,}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the 9 x 4 table of one preset (real presets are built on the meta device)."""
    from trainables.presets import build_model  # heavy import only for the CLI

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", required=True, choices=PRESETS, help="model preset")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = build_model(args.llm, meta=True).model
    rows = table(model, PRESET_FAMILY[args.llm])
    print(f"{args.llm}: {rows[0]['total']:,} parameters; baseline (full Q-Former) trains "
          f"{rows[0]['baseline_trainable']:,}")
    print(format_table(rows))
    print(f"({len(rows)} cells in {time.perf_counter() - start:.2f} s)")


if __name__ == "__main__":
    main()
