"""--dry-run: every trial of a space with parameter counts at the REAL model sizes, plus estimates.

Why: before renting GPUs for 132 trials a user wants to know what each trial trains and roughly
what it needs. Each real model (Flan-T5-XL / Vicuna-7B InstructBLIP) is built ONCE on the meta
device (shapes only, no weights, no download) and every cell is counted analytically
(trainables.accounting), so the whole grid takes seconds and Ray never starts.

Estimates (documented approximations, per trial, at the paper's recipe):
  tokens: ViT T_v = 257 patches (224 px / 14 + CLS); Q-Former T_q = 32 queries + ~QF_TEXT_TOKENS
  instruction tokens; LLM input T_in = 32 query embeddings + PROMPT_TOKENS[benchmark] (typical
  prompt length under the recipe's cap) and T_out = ANSWER_TOKENS target tokens (T5: decoder;
  LLaMA: appended to the input).
  GPU memory = 2 B x all parameters (bf16 weights)
             + 16 B x trainable parameters (fp32 master copy 4 + grad 4 + AdamW m, v 8)
             + activations: 34 B x tokens x hidden x layers x micro-batch (Korthikanti et al.
               2022, 16-bit, no recomputation) for the LLM -- gradients flow back through the LLM
               to the Q-Former in every method, so its activations are always kept -- plus the
               same term for the Q-Former; the frozen ViT keeps none. No allocator overhead.
  training FLOPs per epoch = train problems x per-example FLOPs, per example:
               forward 2 x N x T for ViT, Q-Former and LLM (N = weights the tokens pass through,
               embeddings excluded), backward 2 x N x T for activation gradients of Q-Former and
               LLM, + 2 x N_trainable x T for weight gradients. Scoring (evaluation) not included.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.driver.spaces import Space
from trainables import defaults
from trainables.families import Family, family_spec
from trainables.methods import PAPER_ADAPTER, PAPER_ALPHA

VIT_TOKENS = 257
QUERY_TOKENS = 32
QF_TEXT_TOKENS = 32
PROMPT_TOKENS = {"scienceqa": 160, "iconqa": 40}
"""Typical LLM prompt tokens (ScienceQA carries hint + lecture context; IconQA a short question)."""
ANSWER_TOKENS = 8
TRAIN_PROBLEMS = {"scienceqa": 6218, "iconqa": 18946}
"""Training problems of the real benchmarks (paper appendix B)."""
ACT_BYTES_PER_TOKEN_HIDDEN_LAYER = 34


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of the plan; counts are integers."""

    method: str
    sublayer: str
    rank: int
    llm: str
    benchmark: str
    lr: float
    trainable_params: int
    total_params: int
    trainable_fraction: float
    fraction_of_baseline: float
    lora_params_qformer: int
    lora_params_llm: int
    est_gpu_memory_bytes: int
    est_train_flops_per_epoch: int
    vit_flops_per_image: int
    """One ViT forward (the work the feature cache saves per use; orchestrator.driver.vit_savings)."""
    vit_trunk_params: int
    """Frozen ViT parameters before post_layernorm (what a trial may release)."""
    adapter: str = PAPER_ADAPTER
    alpha: str = PAPER_ALPHA
    vit_cache_flops_saved: int = 0
    """ViT FLOPs the feature cache saves this trial (set by orchestrator.driver.vit_savings.apply)."""
    vit_resident: bool = True
    """False: every image comes from the cache, the ViT trunk leaves the GPU (memory excludes it)."""


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need from one real model (read once from its meta build)."""

    family: Family
    sizes: dict[str, int]
    llm_hidden: int
    llm_layers: int
    qformer_hidden: int
    qformer_layers: int


def model_shape(preset: str) -> tuple[Any, ModelShape]:
    """Build ``preset`` on the meta device once; its bundle and the shapes the estimates use."""
    from trainables.accounting import base_sizes
    from trainables.presets import build_model
    bundle = build_model(preset, meta=True)
    cfg = bundle.model.config
    text = cfg.text_config
    layers = getattr(text, "num_layers", None) or text.num_hidden_layers
    layers += getattr(text, "num_decoder_layers", 0) or 0
    hidden = getattr(text, "d_model", None) or text.hidden_size
    return bundle, ModelShape(family=family_spec(bundle.family), sizes=base_sizes(bundle.model),
                              llm_hidden=hidden, llm_layers=layers,
                              qformer_hidden=cfg.qformer_config.hidden_size,
                              qformer_layers=cfg.qformer_config.num_hidden_layers)


def _weights(sizes: dict[str, int], prefix: str) -> int:
    """Matrix weights under ``prefix`` that tokens multiply through (embeddings excluded)."""
    return sum(v for n, v in sizes.items()
               if n.startswith(prefix) and "embed" not in n and ".shared." not in n
               and not n.startswith("language_model.shared"))


def estimates(shape: ModelShape, preset: str, benchmark: str, lora: dict[str, int],
              trainable: int, total: int) -> tuple[int, int]:
    """(GPU memory bytes, training FLOPs per epoch) by the module docstring's formulas."""
    recipe = defaults.recipe_for(preset)
    t_q = QUERY_TOKENS + QF_TEXT_TOKENS
    t_in = QUERY_TOKENS + PROMPT_TOKENS[benchmark]
    s = shape.sizes
    n_vit, n_qf = _weights(s, "vision_model."), _weights(s, "qformer.")
    if shape.family.encoder_decoder:
        llm_tokens = [(_weights(s, "language_model.encoder."), t_in),
                      (_weights(s, "language_model.decoder.") + _weights(s, "language_model.lm_head"),
                       ANSWER_TOKENS)]
        act_tokens = t_in + ANSWER_TOKENS
    else:
        llm_tokens = [(_weights(s, "language_model."), t_in + ANSWER_TOKENS)]
        act_tokens = t_in + ANSWER_TOKENS
    llm_nt = sum(n * t for n, t in llm_tokens)
    train_nt = (trainable - lora["llm"]) * t_q + lora["llm"] * (t_in + ANSWER_TOKENS)
    flops_example = 2 * (n_vit * VIT_TOKENS + n_qf * t_q + llm_nt) + 2 * (n_qf * t_q + llm_nt) \
        + 2 * train_nt
    b = recipe.batch_size
    activations = ACT_BYTES_PER_TOKEN_HIDDEN_LAYER * b * (
        act_tokens * shape.llm_hidden * shape.llm_layers
        + t_q * shape.qformer_hidden * shape.qformer_layers)
    memory = 2 * total + 16 * trainable + activations
    return int(memory), int(flops_example * TRAIN_PROBLEMS[benchmark])


def vit_sizes(shape: ModelShape) -> dict[str, int]:
    """ViT forward FLOPs per image (the planner's 2 x N x T) and the trunk's parameter count."""
    trunk = sum(v for n, v in shape.sizes.items()
                if n.startswith("vision_model.") and not n.startswith("vision_model.post_layernorm."))
    return {"vit_flops_per_image": 2 * _weights(shape.sizes, "vision_model.") * VIT_TOKENS,
            "vit_trunk_params": int(trunk)}


def build_plan(space: Space) -> list[PlannedTrial]:
    """One PlannedTrial per cell of ``space`` (paper names), each real model built once."""
    from trainables.accounting import count_parameters
    shapes: dict[str, tuple[Any, ModelShape]] = {}
    plan = []
    for cell in space.cells:
        llm, peft = cell.llm, cell.peft
        if llm not in shapes:
            shapes[llm] = model_shape(llm)
        bundle, shape = shapes[llm]
        rep = count_parameters(bundle.model, peft, shape.family)
        lora = {"qformer": rep.lora_params_qformer, "llm": rep.lora_params_llm}
        memory, flops = estimates(shape, llm, cell.benchmark, lora, rep.trainable, rep.total)
        lr = space.overrides.get("lr") or defaults.default_lr(peft.method, llm)
        plan.append(PlannedTrial(
            method=peft.method, sublayer=peft.sublayer, rank=peft.rank, llm=llm,
            adapter=peft.adapter, alpha=peft.alpha,
            benchmark=cell.benchmark, lr=float(lr), trainable_params=int(rep.trainable),
            total_params=int(rep.total), trainable_fraction=rep.trainable_fraction,
            fraction_of_baseline=rep.fraction_of_baseline,
            lora_params_qformer=int(rep.lora_params_qformer),
            lora_params_llm=int(rep.lora_params_llm), est_gpu_memory_bytes=memory,
            est_train_flops_per_epoch=flops, **vit_sizes(shape)))
    return plan


def format_plan(plan: list[PlannedTrial]) -> str:
    """Fixed-width table, one line per trial, and totals."""
    head = (f"{'#':>3} {'benchmark':<10}{'llm':<11}{'method':<13}{'sublayer':<11}{'r':>2} "
            f"{'adapter':>7} {'lr':>8} {'trainable':>13} {'% total':>8} {'% base':>7} {'GPU GiB':>8} "
            f"{'PFLOP/epoch':>12}")
    lines = [head, "-" * len(head)]
    for i, t in enumerate(plan, 1):
        lines.append(
            f"{i:>3} {t.benchmark:<10}{t.llm:<11}{t.method:<13}{t.sublayer:<11}{t.rank:>2} "
            f"{t.adapter + ('' if t.alpha == PAPER_ALPHA else '/' + t.alpha):>7} {t.lr:>8.1e} "
            f"{t.trainable_params:>13,} {100 * t.trainable_fraction:>8.3f} "
            f"{100 * t.fraction_of_baseline:>7.2f} {t.est_gpu_memory_bytes / 2**30:>8.1f} "
            f"{t.est_train_flops_per_epoch / 1e15:>12.1f}")
    total = sum(t.est_train_flops_per_epoch for t in plan)
    lines.append(f"{len(plan)} trials at real model sizes (meta device, no weights); "
                 f"{total / 1e18:.1f} EFLOP per epoch of all trials together; estimates: see "
                 f"orchestrator/driver/plan.py")
    return "\n".join(lines)


def write_plan_json(plan: list[PlannedTrial], path: Path) -> None:
    """The plan for other tools: a JSON list, one object per trial (counts are integers)."""
    path.write_text(json.dumps([asdict(t) for t in plan], indent=1) + "\n")
