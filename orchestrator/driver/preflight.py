"""Checks of a sweep's values against what can actually run, before anything is written.

The space and TrialConfig check types and the vocabulary; these check what only shows once a
trial runs, so that it fails in seconds with one line instead of three retries per trial after
Ray started (or a trial that pends for ever):

- no two trials are the same cell (a YAML ``ranks: [1, 1]`` or two paper names mapped to one
  preset would train each cell twice and report one);
- values within what a model or budget can take: a rank no larger than the smallest layer it
  adapts, a prompt that fits the LLM's positions, plausible epochs / lr / batch sizes / seeds;
- ``--llm PAPER=DIR`` is a complete InstructBLIP checkpoint of the right LLM family, and
  ``--llm PAPER=flan-t5-xl`` (the HF cache) is in the cache (no downloads at run time);
- one trial's CPUs and GPUs fit this machine (a local sweep; on a cluster an autoscaler may
  still add larger nodes: cluster.wait_for_fitting_node asks it for one after ray.init).
"""
from __future__ import annotations

import json
import math
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from trainables.bounded_read import UnreadableInput, read_regular
from trainables.config import TrialConfig
from trainables.defaults import PLAUSIBLE_LIMITS
from trainables.excerpt import excerpt

if TYPE_CHECKING:  # building models imports torch and transformers: only where a check needs it
    from trainables.presets import ModelBundle

MAX_CONFIG_JSON_BYTES = 4 * 1024 * 1024
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class PreflightError(ValueError):
    """A value no trial could run with; the message names the cell or option and the limit."""


def check_trials(trials: list[TrialConfig], *, sources: bool = True) -> None:
    """Every check on the resolved trial configs (one per cell); ``sources``: also the model
    checkpoints (not for --dry-run, which plans without them)."""
    check_unique_cells(trials)
    for cfg in trials:
        check_limits(cfg)
    if sources:
        for key in dict.fromkeys((cfg.llm, cfg.model_path) for cfg in trials
                                 if not cfg.random_weights):  # those need no checkpoint
            check_model_source(*key)
    for cfg in trials:
        check_fits_model(cfg)


def check_unique_cells(trials: list[TrialConfig]) -> None:
    seen: set[str] = set()
    for cfg in trials:
        if cfg.cell_id in seen:
            raise PreflightError(f"cell {cfg.cell_id} appears twice in the space (a repeated "
                                 f"rank or method, or two paper names mapped to one preset); "
                                 f"each cell must be trained once")
        seen.add(cfg.cell_id)


def check_limits(cfg: TrialConfig) -> None:
    """Plausibility bounds (defaults.PLAUSIBLE_LIMITS): beyond them no budget or model works."""
    for name, (low, high) in PLAUSIBLE_LIMITS.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value) or not low <= value <= high:
            raise PreflightError(f"cell {cfg.cell_id}: {name} {excerpt(value)} is outside "
                                 f"[{_num(low)}, {_num(high)}]")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@cache
def _meta_bundle(llm: str) -> ModelBundle:
    """The preset's architecture on the meta device (no weights, no memory), built once per
    preset: the 132-cell grid asks for 18 (LLM, method, sublayer) facts, ~0.2 s a build."""
    from trainables.presets import build_model
    return build_model(llm, meta=True)


@cache
def _layer_facts(llm: str, method: str, sublayer: str) -> tuple[int, str, int | None, int]:
    """(smallest in/out size among the adapted layers, its name, LLM positions, query tokens),
    from the preset's architecture on the meta device."""
    from trainables.families import family_spec
    from trainables.methods import PeftSetup, method_spec
    from trainables.peft_targeting import lora_target_names
    from trainables.vocab import PRESET_FAMILY

    bundle = _meta_bundle(llm)
    peft = PeftSetup(method, sublayer, 1 if method_spec(method).has_lora else 0)
    modules = dict(bundle.model.named_modules())
    sizes = [(min(m.in_features, m.out_features), n) for n in
             lora_target_names(bundle.model, peft, family_spec(PRESET_FAMILY[llm]))
             if hasattr(m := modules[n], "in_features")]
    smallest, name = min(sizes) if sizes else (0, "")
    positions = getattr(bundle.model.config.text_config, "max_position_embeddings", None)
    return smallest, name, positions, bundle.num_query_tokens


def check_fits_model(cfg: TrialConfig) -> None:
    """A LoRA rank no larger than the smallest adapted layer; a prompt within the LLM's
    positions (LLaMA; T5's relative positions have no hard limit)."""
    from trainables.methods import method_spec
    smallest, name, positions, queries = _layer_facts(cfg.llm, cfg.method, cfg.sublayer)
    if method_spec(cfg.method).has_lora and smallest and cfg.rank > smallest:
        raise PreflightError(f"cell {cfg.cell_id}: rank {cfg.rank} exceeds the smallest layer it "
                             f"adapts ({name}: {smallest}); a LoRA rank must be <= {smallest}")
    if positions and cfg.max_prompt_tokens + queries > positions:
        raise PreflightError(f"cell {cfg.cell_id}: max_prompt_tokens {cfg.max_prompt_tokens} + "
                             f"{queries} image tokens exceed the LLM's {positions} positions")


def check_model_source(llm: str, model_path: str | None) -> None:
    """A local checkpoint directory is complete; a real preset without one is in the HF cache."""
    from trainables.vocab import PRESET_FAMILY, REAL_PRESETS
    if llm not in REAL_PRESETS:
        return
    if model_path is None:
        from huggingface_hub import try_to_load_from_cache

        from trainables.real_configs import HF_REPO_IDS
        if not isinstance(try_to_load_from_cache(HF_REPO_IDS[llm], "config.json"), str):
            raise PreflightError(f"--llm {llm}: {HF_REPO_IDS[llm]} is not in the Hugging Face "
                                 f"cache and nothing is downloaded at run time; download it "
                                 f"first or pass --llm {llm}=/path/to/checkpoint")
        return
    check_model_dir(Path(model_path), PRESET_FAMILY[llm], f"--llm {llm}={model_path}")


def check_model_dir(root: Path, family: str, what: str) -> None:
    """config.json of an InstructBLIP with a ``family`` LLM, weights, both tokenizers."""
    try:
        config = json.loads(read_regular(root / "config.json", MAX_CONFIG_JSON_BYTES))
    except UnreadableInput as err:
        raise PreflightError(f"{what}: config.json {err}; expected an InstructBLIP checkpoint "
                             f"directory (save_pretrained layout)") from None
    except ValueError as err:
        raise PreflightError(f"{what}: config.json is not valid JSON ({excerpt(str(err))})") \
            from None
    kind = config.get("model_type") if isinstance(config, dict) else config
    text = config.get("text_config") if isinstance(config, dict) else None
    if kind != "instructblip" or not isinstance(text, dict):
        raise PreflightError(f"{what}: config.json does not describe an InstructBLIP model "
                             f"(model_type {excerpt(kind)})")
    found = "llama" if text.get("model_type") == "llama" else "t5" \
        if text.get("model_type") == "t5" else text.get("model_type")
    if found != family:
        raise PreflightError(f"{what}: holds a {excerpt(found)} LLM, the preset needs {family}")
    if not any((root / f).is_file() for f in WEIGHT_FILES):
        raise PreflightError(f"{what}: no weights ({' / '.join(WEIGHT_FILES)})")
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (root / index).is_file():
            _check_shards(root, index, what)
    if not (root / "tokenizer_config.json").is_file() or \
            not (root / "qformer_tokenizer").is_dir():
        raise PreflightError(f"{what}: tokenizer_config.json or qformer_tokenizer/ is missing")


def _check_shards(root: Path, index: str, what: str) -> None:
    try:
        shards = set(json.loads(read_regular(root / index, MAX_CONFIG_JSON_BYTES))
                     ["weight_map"].values())
    except (UnreadableInput, ValueError, KeyError, TypeError, AttributeError):
        raise PreflightError(f"{what}: {index} is not a valid weight index") from None
    missing = sorted(s for s in shards if not (root / s).is_file())
    if missing:
        raise PreflightError(f"{what}: weight shard(s) {excerpt(missing)} listed in {index} "
                             f"are missing")


def check_local_resources(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """A local Ray gets this machine's CPUs: a trial asking for more would pend for ever."""
    cpus = os.cpu_count() or 1
    if cpus_per_trial > cpus:
        raise PreflightError(f"--cpus-per-trial {cpus_per_trial:g}, but this machine has {cpus} "
                             f"CPUs: no trial could ever start; use at most {cpus}")
    if gpus_per_trial > 0:
        import torch
        have = torch.cuda.device_count()
        if 0 < have < gpus_per_trial:  # none at all: driver.check_gpus says so
            raise PreflightError(f"--gpus-per-trial {gpus_per_trial:g}, but this machine has "
                                 f"{have} CUDA GPU(s)")


def check_output_path(path: str | Path, option: str, *, directory: bool) -> None:
    """An output the sweep writes at its end (--report-dir, --plan-out) can be made: checked
    now, writing nothing, so a typo does not cost a finished sweep its report."""
    target = Path(path).expanduser()
    if target.exists() and target.is_dir() != directory:
        raise PreflightError(f"{option} {excerpt(str(path), 200)} exists and is "
                             f"{'not ' if directory else ''}a directory")
    parent = target.parent if target.exists() else target
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise PreflightError(f"{option} {excerpt(str(path), 200)}: {parent} is a file, so it "
                             f"cannot be created")


def check_free_space(storage: str) -> None:
    """A local storage with less than MIN_FREE_BYTES free would fill up at the first checkpoint."""
    from orchestrator.driver.tune_callbacks import MIN_FREE_BYTES, free_bytes
    if "://" not in storage and free_bytes(storage) < MIN_FREE_BYTES:
        raise PreflightError(f"storage {storage} is full ({free_bytes(storage) / 2**20:.1f} MiB "
                             f"free, at least {MIN_FREE_BYTES / 2**20:.0f} MiB needed); free "
                             f"some space")


def verify_resume_checkpoints(storage: str, name: str) -> None:
    """--resume loads every unfinished trial's checkpoint: refuse, before Ray starts, any
    state.pt that is not what a trial wrote (a pickle payload planted in shared storage).
    Cloud storage is checked by each trial as it loads (trainables.checkpoint)."""
    if "://" in storage:
        return
    states = sorted(Path(storage, name).rglob("state.pt"))
    if not states:
        return
    from trainables.checkpoint import CheckpointError, verify_checkpoint
    for state in states:
        try:
            verify_checkpoint(state.parent)
        except CheckpointError as err:
            raise PreflightError(f"--resume: {err}") from None
