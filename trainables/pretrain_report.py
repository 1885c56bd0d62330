"""What a pretraining run leaves behind: zero-shot scores, the weights file and its manifest.

Why separate from the training loop: scoring reuses the fine-tuning trial machinery (prepared
benchmarks, the batched ranking scorer) and the manifest needs git and file hashing; neither
belongs in the loop that a unit test reruns for determinism.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import save_model

from trainables.config import TrialConfig
from trainables.loop import Trial, build_trial, evaluate
from trainables.presets import ModelBundle
from trainables.pretrain import PretrainResult
from trainables.pretrained import PRETRAINED_DIR, file_sha256, manifest_path, weights_path
from trainables.vocab import SYNTH_BENCHMARKS

_ROOT = Path(__file__).resolve().parent.parent
SOURCES: tuple[str, ...] = (
    "trainables/pretrain.py", "trainables/pretrain_corpus.py", "trainables/batching.py",
    "trainables/step.py", "trainables/presets.py", "trainables/defaults.py",
    "trainables/data/synth.py", "trainables/data/images.py",
)
"""The files whose content decides the pretrained weights (hashed into the manifest)."""


def score_zero_shot(bundle: ModelBundle, seed: int) -> dict[str, dict[str, Any]]:
    """Accuracy of the untouched pretrained model on both synth benchmarks, scored as usual."""
    out: dict[str, dict[str, Any]] = {}
    for benchmark in SYNTH_BENCHMARKS:
        # vit_cache off: the cache releases the ViT trunk after caching, and this bundle is
        # scored twice (and saved afterwards); its features are not worth caching either.
        cfg = TrialConfig(method="baseline", llm=bundle.preset, benchmark=benchmark, seed=seed,
                          vit_cache=False)
        trial = build_trial(cfg, splits=("val", "test"), bundle=bundle)
        val, _ = evaluate(trial, "val")
        test, _ = evaluate(trial, "test")
        out[benchmark] = {"val": val, "test": test, **_chance(trial),
                          "inputs_sha256": scored_inputs_sha256(trial)}
    bundle.model.requires_grad_(False)
    return out


def scored_inputs_sha256(trial: Trial) -> str:
    """SHA-256 of exactly what zero-shot scoring saw (val + test: images, token ids, answers), so
    a test can tell when the recorded zero-shot accuracy no longer describes today's benchmark."""
    h = hashlib.sha256()
    for split in ("val", "test"):
        for p in trial.splits[split]:
            h.update(json.dumps([split, p.pid, p.qformer_ids, p.prefix_ids, p.candidate_ids,
                                 p.answer_index]).encode())
            h.update(p.image.numpy().tobytes())
    return h.hexdigest()


def _chance(trial: Trial) -> dict[str, float]:
    """Mean 1/len(candidates) of the scored problems: the accuracy of guessing."""
    return {f"chance_{split}": sum(1 / len(p.candidate_ids) for p in trial.splits[split]) / len(trial.splits[split])
            for split in ("val", "test")}


def code_version(root: Path = _ROOT) -> dict[str, Any]:
    """Git commit (if any), whether the deciding sources differ from it, and their content hash."""
    h = hashlib.sha256()
    for rel in SOURCES:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    version: dict[str, Any] = {"sources_sha256": h.hexdigest(), "sources": list(SOURCES)}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *SOURCES], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        version.update(git_commit=commit, sources_dirty=bool(dirty))
    except (OSError, subprocess.CalledProcessError):
        version.update(git_commit=None, sources_dirty=None)
    return version


def build_manifest(result: PretrainResult, zero_shot: dict[str, dict[str, Any]], command: str,
                   weights_sha256: str) -> dict[str, Any]:
    """Everything needed to trust, compare and rebuild the shipped weights."""
    model = result.bundle.model
    return {
        "preset": result.bundle.preset,
        "seed": result.seed,
        "weights_file": f"{result.bundle.preset}.safetensors",
        "weights_sha256": weights_sha256,
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus": {"sha256": result.corpus_sha256, "train_items": result.recipe.train_items,
                   "heldout_items": result.recipe.heldout_items,
                   "caption_share": result.recipe.caption_share,
                   "downstream_images_excluded": result.excluded_images},
        "steps": result.steps,
        "epochs": result.recipe.epochs,
        "recipe": {k: getattr(result.recipe, k) for k in result.recipe.__dataclass_fields__},
        "final_losses": {"train_last_epoch": {o: v[-1] for o, v in result.train_loss.items()},
                         "heldout": result.heldout_loss},
        "train_loss_per_epoch": result.train_loss,
        "zero_shot": zero_shot,
        "code_version": code_version(),
        "command": command,
        "wall_s": round(result.wall_s, 1),
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "python": platform.python_version(), "machine": platform.machine(),
                        "num_threads": result.recipe.num_threads},
    }


def write_shipped(result: PretrainResult, zero_shot: dict[str, dict[str, Any]], command: str,
                  out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``<preset>.safetensors`` and ``<preset>.json`` atomically (both or neither replaced)."""
    out_dir = Path(out_dir or PRETRAINED_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    preset = result.bundle.preset
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".pretrain-") as tmp:
        tmp_weights = Path(tmp) / "weights.safetensors"
        save_model(result.bundle.model, str(tmp_weights), metadata={"preset": preset, "seed": str(result.seed)})
        manifest = build_manifest(result, zero_shot, command, file_sha256(tmp_weights))
        tmp_manifest = Path(tmp) / "manifest.json"
        tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for path in (tmp_weights, tmp_manifest):
            path.chmod(0o644)  # tempfile makes 0600; shipped files are world-readable
        os.replace(tmp_weights, weights_path(preset, out_dir))
        os.replace(tmp_manifest, manifest_path(preset, out_dir))
    return weights_path(preset, out_dir), manifest_path(preset, out_dir)
