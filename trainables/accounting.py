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

from trainables.families import Family, family_spec
from trainables.methods import ADAPTERS, METHODS, PAPER_ADAPTER, PeftSetup
from trainables.peft_targeting import (
    base_model_of,
    full_trainable_prefixes,
    is_lora_param,
    lora_param_count,
)
from trainables.vocab import PAPER_RANKS, PRESET_FAMILY, PRESETS

BASELINE = PeftSetup("baseline", "none", 0)
"""The reference of fraction_of_baseline: InstructBLIP's own full Q-Former fine-tune."""


@dataclass(frozen=True)
class ParamReport:
    """Parameter counts of one (model, PEFT setup) cell; its fields are reported as metrics."""

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
    """Adapter parameters inside the Q-Former (LoRA A/B, plus DoRA's magnitudes)."""
    lora_params_llm: int
    """Adapter parameters inside the LLM."""
    qformer_total: int
    """Parameters of the Q-Former itself (``qformer.*`` plus the learned query tokens)."""
    qformer_trainable_fraction: float
    """Trainable Q-Former parameters (its LoRA or its full weights) / qformer_total."""

    def as_metrics(self) -> dict[str, float | int]:
        """What a trial's first report carries (docs/ARCHITECTURE.md "Reports a trial makes")."""
        return {"trainable_params": self.trainable, "total_params": self.total,
                "trainable_fraction": self.trainable_fraction,
                "fraction_of_baseline": self.fraction_of_baseline,
                "lora_params": self.lora_params_qformer + self.lora_params_llm,
                "lora_params_qformer": self.lora_params_qformer,
                "lora_params_llm": self.lora_params_llm,
                "qformer_trainable_fraction": self.qformer_trainable_fraction}


def _strip_base_layer(name: str) -> str:
    return name.replace(".base_layer.", ".")


def base_sizes(model: nn.Module) -> dict[str, int]:
    """Base (non-LoRA) parameter sizes by name, with peft's ``.base_layer.`` removed.

    Works for a plain or a peft-wrapped model, so a report can be made at any time.
    """
    return {_strip_base_layer(n): p.numel() for n, p in base_model_of(model).named_parameters()
            if not is_lora_param(n)}


def count_parameters(model: nn.Module, peft: PeftSetup, family: Family) -> ParamReport:
    """Analytic ParamReport of ``model`` (plain, peft-wrapped, or on the meta device)."""
    sizes = base_sizes(model)

    def by_prefix(prefixes: tuple[str, ...]) -> int:
        return sum(v for n, v in sizes.items() if n.startswith(prefixes))

    lora = lora_param_count(model, peft, family)
    full = by_prefix(full_trainable_prefixes(peft))
    trainable = full + lora["qformer"] + lora["llm"]
    total = sum(sizes.values()) + lora["qformer"] + lora["llm"]
    baseline = by_prefix(full_trainable_prefixes(BASELINE))
    qformer_total = by_prefix(("qformer.", "query_tokens"))
    qformer_full = by_prefix(("qformer.",)) if peft.spec.trains_full_qformer else 0
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


def all_cells(ranks: tuple[int, ...] = PAPER_RANKS,
              adapter: str = PAPER_ADAPTER) -> list[PeftSetup]:
    """The 9 Table-1 rows at every rank (the rows without LoRA once, rank 0)."""
    cells = []
    for method in METHODS.values():
        for sublayer in method.sublayers:
            if not method.has_lora:
                cells.append(PeftSetup(method.name, sublayer, 0))
            else:
                cells += [PeftSetup(method.name, sublayer, r, adapter) for r in ranks]
    return cells


def table(model: nn.Module, family: Family, ranks: tuple[int, ...] = PAPER_RANKS,
          adapter: str = PAPER_ADAPTER) -> list[dict]:
    """One row per cell: method, sublayer, rank, adapter and the ParamReport fields."""
    return [{"method": p.method, "sublayer": p.sublayer, "rank": p.rank, "adapter": p.adapter,
             **asdict(count_parameters(model, p, family))} for p in all_cells(ranks, adapter)]


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
    parser.add_argument("--adapter", default=PAPER_ADAPTER, choices=ADAPTERS,
                        help="LoRA variant (default: the paper's plain LoRA)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = build_model(args.llm, meta=True).model
    rows = table(model, family_spec(PRESET_FAMILY[args.llm]), adapter=args.adapter)
    print(f"{args.llm}: {rows[0]['total']:,} parameters; baseline (full Q-Former) trains "
          f"{rows[0]['baseline_trainable']:,}")
    print(format_table(rows))
    print(f"({len(rows)} cells in {time.perf_counter() - start:.2f} s)")


if __name__ == "__main__":
    main()
