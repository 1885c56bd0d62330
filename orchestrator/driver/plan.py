"""--dry-run: every trial of a space with parameter counts at the REAL model sizes, plus estimates.

Why: before renting GPUs for 132 trials a user wants to know what each trial trains and roughly
what it needs. Each real model (Flan-T5-XL / Vicuna-7B InstructBLIP) is built ONCE on the meta
device (shapes only, no weights, no download) and every cell is counted analytically
(trainables.accounting), so the whole grid takes seconds and Ray never starts.

Estimates (documented approximations, per trial, at the paper's recipe):
  memory: trainables.memory, the model the trials themselves fit their settings with (weights in
    the recipe's dtype, fp32 masters + gradients + AdamW, activations kept at the micro-batch with
    or without checkpointing, the scorer's KV caches at the eval batch, CUDA context and
    allocator slack), at the longest sequences the recipe allows (prompt and Q-Former text at
    max_prompt_tokens, PLAN_ANSWER_TOKENS-token candidates, PLAN_CANDIDATES per problem): a trial
    refits to its own data's lengths when it starts.
    est_gpu_memory_bytes: the peak at the recipe's micro-batch without checkpointing (the
    paper's setting); fits[gpu]: the first setting trainables.memory.choose_fit finds for that
    GPU type (effective batch kept), or None; est_cpu_rss_bytes: a CPU run (--cpu) at
    micro-batch 1, eval batch 1.
  tokens (FLOPs): ViT T_v = 257 patches (224 px / 14 + CLS); Q-Former T_q = 32 queries +
  ~QF_TEXT_TOKENS instruction tokens; LLM input T_in = 32 query embeddings +
  PROMPT_TOKENS[benchmark] (typical prompt length under the recipe's cap) and T_out =
  ANSWER_TOKENS target tokens (T5: decoder; LLaMA: appended to the input).
  training FLOPs per epoch = train problems x per-example FLOPs, per example:
               forward 2 x N x T for ViT, Q-Former and LLM (N = weights the tokens pass through,
               embeddings excluded), backward 2 x N x T for activation gradients of Q-Former and
               LLM, + 2 x N_trainable x T for weight gradients. Scoring (evaluation) not included.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.driver.spaces import Space
from trainables import defaults
from trainables.families import Family, family_spec
from trainables.memory import (
    GPU_TYPES,
    MemoryEstimate,
    MemorySetup,
    ParamCounts,
    choose_fit,
    estimate_memory,
)
from trainables.memory import ModelShape as MemoryShape
from trainables.methods import PAPER_ADAPTER, PAPER_ALPHA, PeftSetup

VIT_TOKENS = 257
QUERY_TOKENS = 32
QF_TEXT_TOKENS = 32
PROMPT_TOKENS = {"scienceqa": 160, "iconqa": 40}
"""Typical LLM prompt tokens (ScienceQA carries hint + lecture context; IconQA a short question)."""
ANSWER_TOKENS = 8
TRAIN_PROBLEMS = {"scienceqa": 6218, "iconqa": 18946}
"""Training problems of the real benchmarks (paper appendix B)."""
PLAN_ANSWER_TOKENS = 24
"""Longest candidate planned for, with its </s> (ScienceQA's longest choices are sentences)."""
PLAN_CANDIDATES = 5
"""Most candidates per problem (ScienceQA and IconQA offer up to five)."""
EFFECTIVE_BATCH = 16


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
    weight_dtype: str = "bf16"
    activation_checkpointing: str = "auto"
    """The requested mode (trial key / --activation-checkpointing: auto|on|off) the fits obey;
    kept so that a refit (with_vit_resident) honours an explicit choice."""
    fits: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """GPU type (trainables.memory.GPU_TYPES) -> the setting that fits it (batch_size,
    grad_accum, eval_batch_size, activation_checkpointing, peak_bytes), None: nothing fits."""
    est_cpu_rss_bytes: int = 0
    """Peak RSS of a CPU run (--cpu) at micro-batch 1 and eval batch 1."""
    memory_inputs: tuple[MemoryShape, ParamCounts, MemorySetup] | None = field(
        default=None, repr=False, compare=False)
    """What the memory numbers were computed from (with_vit_resident recomputes them)."""


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need from one real model (read once from its meta build)."""

    family: Family
    sizes: dict[str, int]
    llm_hidden: int
    llm_layers: int
    qformer_hidden: int
    qformer_layers: int


def model_shape(preset: str, text_layers: int | None = None) -> tuple[Any, ModelShape]:
    """Build ``preset`` on the meta device once; its bundle and the shapes the estimates use."""
    from trainables.accounting import base_sizes
    from trainables.presets import build_model
    bundle = build_model(preset, meta=True, text_layers=text_layers)
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


def train_flops_per_example(shape: ModelShape, prompt_tokens: int, answer_tokens: int,
                            lora: dict[str, int], trainable: int) -> int:
    """Model FLOPs of one training example (module docstring; recomputation not counted)."""
    t_q = QUERY_TOKENS + QF_TEXT_TOKENS
    t_in = QUERY_TOKENS + prompt_tokens
    s = shape.sizes
    n_vit, n_qf = _weights(s, "vision_model."), _weights(s, "qformer.")
    if shape.family.encoder_decoder:
        llm_tokens = [(_weights(s, "language_model.encoder."), t_in),
                      (_weights(s, "language_model.decoder.") + _weights(s, "language_model.lm_head"),
                       answer_tokens)]
    else:
        llm_tokens = [(_weights(s, "language_model."), t_in + answer_tokens)]
    llm_nt = sum(n * t for n, t in llm_tokens)
    train_nt = (trainable - lora["llm"]) * t_q + lora["llm"] * (t_in + answer_tokens)
    return int(2 * (n_vit * VIT_TOKENS + n_qf * t_q + llm_nt) + 2 * (n_qf * t_q + llm_nt) + 2 * train_nt)


def train_flops_per_epoch(shape: ModelShape, benchmark: str, lora: dict[str, int], trainable: int) -> int:
    """Training FLOPs per epoch at the benchmark's typical prompt length."""
    per_example = train_flops_per_example(shape, PROMPT_TOKENS[benchmark], ANSWER_TOKENS, lora, trainable)
    return per_example * TRAIN_PROBLEMS[benchmark]


def memory_setup(preset: str, overrides: dict[str, Any], device: str = "cuda") -> MemorySetup:
    """The recipe's MemorySetup for ``preset`` (space/CLI ``overrides`` of weight_dtype, batch
    sizes, max_prompt_tokens win), at the longest sequences the recipe allows."""
    recipe = defaults.recipe_for(preset)

    def get(name: str) -> Any:
        value = overrides.get(name)
        return getattr(recipe, name) if value is None else value
    cap = int(get("max_prompt_tokens"))
    return MemorySetup(device=device, weight_dtype=get("weight_dtype"), compute_16bit=True,
                       batch_size=int(get("batch_size")), eval_batch_size=int(get("eval_batch_size")),
                       activation_checkpointing=overrides.get("activation_checkpointing") == "on",
                       prompt_tokens=cap, answer_tokens=PLAN_ANSWER_TOKENS, qformer_text_tokens=cap,
                       candidates=PLAN_CANDIDATES)


def memory_fields(shape: MemoryShape, counts: ParamCounts, setup: MemorySetup, mode: str = "auto",
                  vit_resident: bool = True) -> dict[str, Any]:
    """The PlannedTrial memory fields: the recipe-setting peak, per-GPU fits, CPU RSS."""
    setup = dataclasses.replace(setup, vit_resident=vit_resident)
    effective = setup.batch_size * max(1, EFFECTIVE_BATCH // setup.batch_size)
    fits = {}
    for gpu, capacity in GPU_TYPES.items():
        fit = choose_fit(shape, counts, setup, capacity, effective, mode)
        fits[gpu] = fit.as_dict() if fit else None
    cpu = dataclasses.replace(setup, device="cpu", batch_size=1, eval_batch_size=1)
    return {"est_gpu_memory_bytes": estimate_memory(shape, counts, setup).peak_bytes, "fits": fits,
            "est_cpu_rss_bytes": estimate_memory(shape, counts, cpu).peak_bytes,
            "weight_dtype": setup.weight_dtype, "memory_inputs": (shape, counts, setup),
            "vit_resident": vit_resident, "activation_checkpointing": mode}


def with_vit_resident(trial: PlannedTrial, resident: bool) -> PlannedTrial:
    """``trial`` with its memory recomputed for a ViT trunk that is (not) on the device, under
    the same requested checkpointing mode (an explicit off stays off)."""
    shape, counts, setup = trial.memory_inputs
    return dataclasses.replace(trial, **memory_fields(shape, counts, setup, trial.activation_checkpointing,
                                                      resident))


def memory_estimate(preset: str, peft: PeftSetup, setup: MemorySetup,
                    text_layers: int | None = None) -> MemoryEstimate:
    """The planner's estimate for one configuration (e.g. a CPU check's), from the meta build
    (``text_layers``: the LLM's depth when a check runs it with fewer layers)."""
    from trainables.presets import build_model
    from trainables.runsetup import param_counts
    bundle = build_model(preset, meta=True, text_layers=text_layers)
    return estimate_memory(MemoryShape.from_config(bundle.model.config),
                           param_counts(peft, bundle.family, bundle.model), setup)


def vit_sizes(shape: ModelShape) -> dict[str, int]:
    """ViT forward FLOPs per image (the planner's 2 x N x T) and the trunk's parameter count."""
    trunk = sum(v for n, v in shape.sizes.items()
                if n.startswith("vision_model.") and not n.startswith("vision_model.post_layernorm."))
    return {"vit_flops_per_image": 2 * _weights(shape.sizes, "vision_model.") * VIT_TOKENS,
            "vit_trunk_params": int(trunk)}


def build_plan(space: Space, overrides: dict[str, Any] | None = None) -> list[PlannedTrial]:
    """One PlannedTrial per cell of ``space`` (paper names), each real model built once.
    ``overrides`` (CLI) win over the space's for weight_dtype, batch sizes, checkpointing."""
    from trainables.accounting import count_parameters
    from trainables.runsetup import param_counts
    settings = {**space.overrides, **(overrides or {})}
    mode = settings.get("activation_checkpointing") or "auto"
    shapes: dict[str, tuple[Any, ModelShape]] = {}
    plan = []
    for cell in space.cells:
        llm, peft = cell.llm, cell.peft
        if llm not in shapes:
            shapes[llm] = model_shape(llm)
        bundle, shape = shapes[llm]
        rep = count_parameters(bundle.model, peft, shape.family)
        lora = {"qformer": rep.lora_params_qformer, "llm": rep.lora_params_llm}
        flops = train_flops_per_epoch(shape, cell.benchmark, lora, rep.trainable)
        memory = memory_fields(MemoryShape.from_config(bundle.model.config),
                               param_counts(peft, shape.family.name, bundle.model),
                               memory_setup(llm, settings), mode)
        lr = space.overrides.get("lr") or defaults.default_lr(peft.method, llm)
        plan.append(PlannedTrial(
            method=peft.method, sublayer=peft.sublayer, rank=peft.rank, llm=llm,
            adapter=peft.adapter, alpha=peft.alpha,
            benchmark=cell.benchmark, lr=float(lr), trainable_params=int(rep.trainable),
            total_params=int(rep.total), trainable_fraction=rep.trainable_fraction,
            fraction_of_baseline=rep.fraction_of_baseline,
            lora_params_qformer=int(rep.lora_params_qformer),
            lora_params_llm=int(rep.lora_params_llm), est_train_flops_per_epoch=flops,
            **memory, **vit_sizes(shape)))
    return plan


GPU_LABELS = {"A10G-24GB": "A10G", "A100-40GB": "A100-40", "A100-80GB": "A100-80",
              "H100-80GB": "H100", "H200-141GB": "H200"}


def fit_code(fit: dict[str, Any] | None) -> str:
    """``16x1`` micro-batch x accumulation, ``+ck`` activation checkpointing, ``e4`` a smaller
    scoring batch; ``-``: no setting fits."""
    if fit is None:
        return "-"
    code = f"{fit['batch_size']}x{fit['grad_accum']}" + ("+ck" if fit["activation_checkpointing"] else "")
    return code + (f" e{fit['eval_batch_size']}" if fit.get("eval_reduced") else "")


def format_plan(plan: list[PlannedTrial]) -> str:
    """Fixed-width table, one line per trial, what fits which GPU, and totals."""
    gpus = "".join(f"{GPU_LABELS[g]:>13}" for g in GPU_TYPES)
    head = (f"{'#':>3} {'benchmark':<10}{'llm':<11}{'method':<13}{'sublayer':<11}{'r':>2} "
            f"{'adapter':>7} {'lr':>8} {'trainable':>13} {'% total':>8} {'% base':>7} {'GPU GiB':>8} "
            f"{'PFLOP/epoch':>12}{gpus}")
    lines = [head, "-" * len(head)]
    for i, t in enumerate(plan, 1):
        lines.append(
            f"{i:>3} {t.benchmark:<10}{t.llm:<11}{t.method:<13}{t.sublayer:<11}{t.rank:>2} "
            f"{t.adapter + ('' if t.alpha == PAPER_ALPHA else '/' + t.alpha):>7} {t.lr:>8.1e} "
            f"{t.trainable_params:>13,} {100 * t.trainable_fraction:>8.3f} "
            f"{100 * t.fraction_of_baseline:>7.2f} {t.est_gpu_memory_bytes / 2**30:>8.1f} "
            f"{t.est_train_flops_per_epoch / 1e15:>12.1f}"
            + "".join(f"{fit_code(_marked(t, g)):>13}" for g in GPU_TYPES))
    total = sum(t.est_train_flops_per_epoch for t in plan)
    lines.append(f"{len(plan)} trials at real model sizes (meta device, no weights); "
                 f"{total / 1e18:.1f} EFLOP per epoch of all trials together; estimates: see "
                 f"orchestrator/driver/plan.py")
    lines.append("GPU columns: micro-batch x accumulation (effective batch 16) that fits, +ck = "
                 "activation checkpointing, eN = scoring N problems at a time, - = does not fit; "
                 "GPU GiB = peak at the recipe's micro-batch without checkpointing.")
    return "\n".join(lines + fit_summary(plan))


def _marked(t: PlannedTrial, gpu: str) -> dict[str, Any] | None:
    fit = t.fits.get(gpu)
    if fit is None:
        return None
    recipe_eval = t.memory_inputs[2].eval_batch_size if t.memory_inputs else fit["eval_batch_size"]
    return {**fit, "eval_reduced": fit["eval_batch_size"] < recipe_eval}


def fit_summary(plan: list[PlannedTrial]) -> list[str]:
    """Per LLM: the smallest GPU type every trial fits, and the trials that fit nowhere (why)."""
    lines = []
    for llm in sorted({t.llm for t in plan}):
        trials = [t for t in plan if t.llm == llm]
        every = [GPU_LABELS[g] for g in GPU_TYPES if all(t.fits.get(g) for t in trials)]
        if every:
            ckpt = sum(bool(t.fits[_gpu(every[0])]["activation_checkpointing"]) for t in trials)
            lines.append(f"{llm}: all {len(trials)} trials fit {every[0]} and larger "
                         f"({ckpt} with activation checkpointing there).")
        for t in trials:
            if not any(t.fits.values()):
                weights = t.memory_inputs and estimate_memory(*t.memory_inputs).weights_bytes
                lines.append(f"{llm} {t.benchmark} {t.method}/{t.sublayer} r{t.rank}: fits no GPU type; "
                             f"weights alone {weights / 2**30:.1f} GiB")
        if not every:
            lines.append(f"{llm}: no GPU type fits every trial; see the GPU columns.")
    return lines


def _gpu(label: str) -> str:
    return next(g for g, lab in GPU_LABELS.items() if lab == label)


def write_plan_json(plan: list[PlannedTrial], path: Path) -> None:
    """The plan for other tools: a JSON list, one object per trial (counts are integers)."""
    rows = [{k: v for k, v in asdict(t).items() if k != "memory_inputs"} for t in plan]
    path.write_text(json.dumps(rows, indent=1) + "\n")
