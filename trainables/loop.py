"""The epoch loop of one trial, without Ray: train, validate, early-stop, keep the best, test.

Why no Ray here: ``python -m trainables.run`` and the tests drive the very same loop; Ray Tune's
function trainable (trainables.tune_fn) only supplies ``report`` and the checkpoint to resume.

Determinism: each epoch draws its data order, augmentation (a generator seeded from
(seed, epoch)) and dropout (the global torch seed is set from (seed, epoch)) from the trial seed
and the epoch index alone, so a trial resumed from the checkpoint of epoch k reports exactly the
metrics of an uninterrupted run.

Reports (docs/ARCHITECTURE.md "Reports a trial makes"): one per epoch, with the validation
accuracy and its finer NLL signals (``val_gold_nll``, ``val_choice_nll``: trainables.predictions);
the first also carries the parameter accounting; the last adds ``test_acc`` (scored with the
best-val state), the ScienceQA category accuracies (``test_acc/NAT`` ...), ``best_epoch`` and
``done``, and its checkpoint holds ``predictions.parquet`` (every val problem at the best epoch
and every test problem). A trial the scheduler stops never reaches its last report; its last
checkpoint keeps the best state and the best epoch's val scores, from which
``trainables.rescore`` gives it the same test score and predictions afterwards. Divergence
(non-finite loss, or an epoch's mean loss above
``divergence_factor`` x the first step's loss, see trainables.defaults) ends the trial with a
report holding ``diverged=True, done=True`` (its val_acc is 0: the model is unusable), and
``run_trial`` returns normally.

Vision inputs: every batch gets its images from ``trial.vision`` (trainables.vision_features):
cached frozen-ViT features for scoring, and for training when augmentation is off, else pixels.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from torch import nn

from trainables import defaults
from trainables.accounting import count_parameters
from trainables.batching import EncodedProblem, TokenSpec, collate_train, encode_examples
from trainables.checkpoint import load_checkpoint, load_trainable_state, save_checkpoint, trainable_state
from trainables.config import TrialConfig
from trainables.data.examples import load_examples
from trainables.data.images import ImageTransform
from trainables.data.prepare import ensure_prepared, read_split_table
from trainables.data.records import SPLITS
from trainables.families import family_spec
from trainables.memory import ModelShape
from trainables.peft_targeting import apply_method
from trainables.predictions import SplitScores, category_metrics, predictions_table, write_predictions
from trainables.presets import WEIGHT_DTYPES, ModelBundle, build_model
from trainables.runsetup import (
    RunSettings,
    memory_setup,
    param_counts,
    peak_memory_bytes,
    reset_peak_memory,
    resolve_settings,
)
from trainables.scoring import ScoreResult, score_in_batches
from trainables.split_cache import SplitCache, SplitGroup
from trainables.step import (
    Precision,
    chunks,
    lr_at_epoch,
    make_optimizer,
    resolve_precision,
    set_activation_checkpointing,
    set_dropout,
    set_lr,
    train_step,
    unwrap,
    upcast_trainables,
)
from trainables.vision_features import CachedInputs, PixelInputs, vision_inputs

ReportFn = Callable[[dict[str, Any], Path | None], None]
"""report(metrics, checkpoint_dir): the directory is only valid during the call (copy it to keep it)."""


@dataclass
class Trial:
    """Everything built once per trial before the first epoch."""

    cfg: TrialConfig
    bundle: ModelBundle
    model: nn.Module
    spec: TokenSpec
    transform: ImageTransform
    vision: PixelInputs
    """What the vision model is fed: pixels, or cached ViT features (trainables.vision_features)."""
    precision: Precision
    device: torch.device
    splits: dict[str, list[EncodedProblem]]
    categories: dict[str, tuple[str, ...]]
    """pid -> ScienceQA leaderboard categories (empty for other benchmarks)."""
    settings: RunSettings
    """Micro-batch, scoring batch and checkpointing actually used (fitted to the memory budget)."""
    scaler: torch.amp.GradScaler | None = None
    """fp16 loss scaling (Precision.grad_scaler); None for bf16 / fp32."""


def build_trial(cfg: TrialConfig, device: torch.device | str = "cpu",
                splits: Sequence[str] = SPLITS, memory_budget: int | None = None,
                bundle: ModelBundle | None = None, split_cache: SplitCache | None = None) -> Trial:
    """Model (seeded, frozen parts in ``cfg.weight_dtype``, trainables as fp32 masters), method
    applied, data prepared and tokenised once (only ``splits``), batch sizes and checkpointing
    fitted to ``memory_budget`` (bytes of GPU memory the trial may use; None: as configured).
    ``bundle``: use this model instead of building ``cfg.llm`` (the pretraining scores its fresh
    weights zero-shot this way, before they are shipped). ``split_cache``: the process's
    encoded splits of its previous trial (trainables.split_cache), reused where they match."""
    torch.set_num_threads(cfg.num_threads)
    device = torch.device(device)
    reset_peak_memory(device)
    if bundle is None:
        bundle = build_model(cfg.llm, model_path=cfg.model_path, device=device, seed=cfg.seed,
                             dtype=WEIGHT_DTYPES[cfg.weight_dtype], random_weights=cfg.random_weights,
                             text_layers=cfg.text_layers, init=cfg.init)
    if cfg.dropout is not None:
        set_dropout(bundle.model, cfg.dropout)
    torch.manual_seed(cfg.seed)  # peft draws the LoRA A matrices from the global RNG
    model = apply_method(bundle.model, cfg.peft, family_spec(bundle.family))
    upcast_trainables(model)
    encoded, categories = _load_splits(cfg, bundle, splits, split_cache)
    transform = ImageTransform(bundle.image_size, bundle.image_mean, bundle.image_std, cfg.augment)
    precision = resolve_precision(cfg.precision, device, cfg.weight_dtype)
    vision = vision_inputs(cfg, model, transform, precision, device)
    if isinstance(vision, CachedInputs):
        vision.prepare([p for problems in encoded.values() for p in problems])
    settings = _fit_settings(cfg, bundle, model, encoded, precision, device, memory_budget)
    return Trial(cfg=cfg, bundle=bundle, model=model, spec=TokenSpec.from_bundle(bundle),
                 transform=transform, vision=vision, precision=precision, device=device, splits=encoded,
                 categories=categories, settings=settings, scaler=precision.grad_scaler())


def _load_splits(cfg: TrialConfig, bundle: ModelBundle, splits: Sequence[str], cache: SplitCache | None,
                 ) -> tuple[dict[str, list[EncodedProblem]], dict[str, tuple[str, ...]]]:
    """The encoded problems of ``splits`` (from ``cache`` where it holds them) and the
    leaderboard categories of the evaluation splits' problems."""
    prepared = ensure_prepared(cfg.benchmark, data_root=cfg.data_root, cache_dir=cfg.cache_dir)
    limits = {"train": cfg.max_train_examples, "val": cfg.max_eval_examples, "test": cfg.max_eval_examples}
    group = SplitGroup(str(prepared), bundle.image_size, cfg.llm, cfg.model_path, cfg.random_weights,
                       cfg.max_prompt_tokens)
    encoded = {}
    for split in splits:
        load = functools.partial(_encode_split, prepared, split, limits[split], bundle, cfg.max_prompt_tokens)
        encoded[split] = load() if cache is None else cache.get(group, split, limits[split], load)
        if not encoded[split]:
            raise ValueError(f"benchmark {cfg.benchmark!r} has no {split} problems in {prepared}")
    categories = {}
    for split in set(splits) - {"train"}:
        cols = read_split_table(prepared, split, ["pid", "categories"]).to_pydict()
        categories.update(zip(cols["pid"], map(tuple, cols["categories"])))
    return encoded, categories


def _encode_split(prepared: Path, split: str, limit: int | None, bundle: ModelBundle,
                  max_prompt_tokens: int) -> list[EncodedProblem]:
    return encode_examples(load_examples(prepared, split, bundle.image_size, limit), bundle, max_prompt_tokens)


def _fit_settings(cfg: TrialConfig, bundle: ModelBundle, model: nn.Module,
                  encoded: dict[str, list[EncodedProblem]], precision: Precision, device: torch.device,
                  memory_budget: int | None) -> RunSettings:
    """RunSettings for this trial's data and device (a ViT released by the feature cache holds
    no memory); activation checkpointing switched on the model accordingly."""
    vit_resident = next(unwrap(model).vision_model.parameters()).device.type != "meta"
    setup = memory_setup(cfg, bundle, encoded, device, precision.dtype is not None, vit_resident)
    settings = resolve_settings(cfg, ModelShape.from_config(bundle.model.config),
                                param_counts(cfg.peft, bundle.family, model), setup, memory_budget)
    set_activation_checkpointing(model, settings.activation_checkpointing)
    return settings


def evaluate(trial: Trial, split: str) -> tuple[float, ScoreResult]:
    """Accuracy of the current model on a split with the batched, prefix-shared scorer."""
    problems = trial.splits[split]
    result = score_in_batches(trial.model, problems, trial.vision.eval_inputs, trial.spec, trial.precision,
                              trial.settings.eval_batch_size)
    return result.accuracy(problems), result


def split_scores(trial: Trial, split: str, result: ScoreResult) -> SplitScores:
    problems = trial.splits[split]
    return SplitScores(split, tuple(p.pid for p in problems), tuple(p.answer_index for p in problems),
                       tuple(result.predictions), tuple(map(tuple, result.scores)))


def final_evaluation(trial: Trial, state: dict[str, Any]) -> tuple[dict[str, Any], pa.Table]:
    """Test metrics of the model as it is (the caller loaded the best-val state) and the
    predictions table: val rows from the best epoch's scores kept in ``state``, test rows now."""
    test = split_scores(trial, "test", evaluate(trial, "test")[1])
    val = state.get("best_val_scores")
    val = SplitScores(**val) if val else split_scores(trial, "val", evaluate(trial, "val")[1])
    table = predictions_table([val, test], trial.categories)
    metrics = {"test_acc": test.accuracy(), "test_gold_nll": test.gold_nll(),
               "test_choice_nll": test.choice_nll(), **category_metrics(table, "test")}
    return metrics, table


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def train_epoch(trial: Trial, optimizer: torch.optim.Optimizer, epoch: int) -> tuple[list[float], int]:
    """One pass over the training split; returns the step losses (stops at a non-finite one)."""
    cfg = trial.cfg
    torch.manual_seed(_epoch_seed(cfg.seed, epoch))  # dropout
    gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
    problems = trial.splits["train"]
    order = torch.randperm(len(problems), generator=gen).tolist()
    trial.model.train()
    losses, samples = [], 0
    for step_ids in chunks(order, cfg.effective_batch):
        micro = []
        for ids in chunks(step_ids, trial.settings.batch_size):
            chunk = [problems[i] for i in ids]
            vision_in = trial.vision.train_inputs(chunk, gen)
            micro.append(collate_train(chunk, vision_in, trial.spec).to(trial.device))
        result = train_step(trial.model, micro, optimizer, trial.precision, trial.scaler)
        losses.append(result.loss)
        samples += result.samples
        if not result.finite:
            break
    return losses, samples


def _param_metrics(trial: Trial) -> dict[str, Any]:
    return {**count_parameters(trial.model, trial.cfg.peft, trial.spec.family).as_metrics(),
            **trial.settings.metrics()}


def should_stop(epochs_since_best: int, epochs_done: int, patience: int, min_epochs: int) -> bool:
    """Early stopping: ``patience`` epochs without a new best val accuracy, never before ``min_epochs``."""
    return epochs_since_best >= patience and epochs_done >= min_epochs


def _fresh_state() -> dict[str, Any]:
    return {"epoch": 0, "best_val_acc": -1.0, "best_epoch": 0, "since_best": 0, "ref_loss": None}


def run_trial(cfg: TrialConfig, *, report: ReportFn, resume_from: Path | None = None,
              device: torch.device | str = "cpu", trial: Trial | None = None,
              memory_budget: int | None = None, split_cache: SplitCache | None = None) -> dict[str, Any]:
    """Run (or resume) one trial; returns the last report's metrics. ``split_cache``: see
    build_trial."""
    trial = trial or build_trial(cfg, device, memory_budget=memory_budget, split_cache=split_cache)
    optimizer = make_optimizer(trial.model, cfg.lr, cfg.weight_decay, defaults.recipe_for(cfg.llm).betas)
    state, best = _fresh_state(), trainable_state(trial.model)
    if resume_from is not None:
        state, best = load_checkpoint(Path(resume_from), trial.model, optimizer, cfg.to_dict())
    metrics: dict[str, Any] = dict(state.get("final_metrics") or {})
    if metrics:  # restored from a finished trial's last checkpoint: nothing left to train
        report(metrics, None)
        return metrics
    predictions = None
    for epoch in range(state["epoch"], cfg.epochs):
        metrics, stop = _run_epoch(trial, optimizer, epoch, state)
        if epoch == 0 and resume_from is None:
            metrics.update(_param_metrics(trial))
        if metrics["diverged"]:
            report(metrics, None)
            return metrics
        last = trainable_state(trial.model)
        if state["best_epoch"] == epoch + 1:
            best = last
        if stop or epoch + 1 == cfg.epochs:
            load_trainable_state(trial.model, best)
            final, predictions = final_evaluation(trial, state)
            metrics.update(final, best_epoch=state["best_epoch"], done=True)
            metrics.update(trial.vision.metrics())  # test scoring included
            state["final_metrics"] = dict(metrics)
        with tempfile.TemporaryDirectory(prefix="trial-ckpt-") as tmp:
            size = save_checkpoint(Path(tmp), trial.model, last=last, best=best, optimizer=optimizer,
                                   loop_state=state, config=cfg.to_dict())
            if predictions is not None:
                write_predictions(predictions, Path(tmp))
            metrics["checkpoint_mb"] = size / 2**20
            report(metrics, Path(tmp))
        if metrics.get("done"):
            break
    return metrics


def _run_epoch(trial: Trial, optimizer: torch.optim.Optimizer, epoch: int,
               state: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Train + validate one epoch, updating ``state`` in place; returns (metrics, early stop)."""
    cfg = trial.cfg
    lr = lr_at_epoch(cfg.lr, epoch, cfg.epochs)
    set_lr(optimizer, lr)
    start = time.perf_counter()
    losses, samples = train_epoch(trial, optimizer, epoch)
    train_time = time.perf_counter() - start
    if state["ref_loss"] is None and losses:
        state["ref_loss"] = losses[0]
    train_loss = sum(losses) / max(1, len(losses))
    diverged = not math.isfinite(train_loss) or train_loss > cfg.divergence_factor * state["ref_loss"]
    metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr,
                               "samples_per_s": samples / train_time, "diverged": diverged}
    if diverged:
        best_acc = max(state["best_val_acc"], 0.0)
        metrics.update(val_acc=0.0, best_val_acc=best_acc, epoch_time_s=time.perf_counter() - start, done=True)
        return metrics, True
    val_acc, result = evaluate(trial, "val")
    val = split_scores(trial, "val", result)
    if val_acc > state["best_val_acc"]:
        state.update(best_val_acc=val_acc, best_epoch=epoch + 1, since_best=0,
                     best_val_scores=dataclasses.asdict(val))
    else:
        state["since_best"] += 1
    state["epoch"] = epoch + 1
    stop = should_stop(state["since_best"], epoch + 1, cfg.patience, cfg.min_epochs)
    metrics.update(val_acc=val_acc, best_val_acc=state["best_val_acc"], val_gold_nll=val.gold_nll(),
                   val_choice_nll=val.choice_nll(), epoch_time_s=time.perf_counter() - start,
                   peak_memory_gib=peak_memory_bytes(trial.device) / 2**30)
    metrics.update(trial.vision.metrics())
    return metrics, stop
