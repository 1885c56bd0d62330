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
import struct
import subprocess
import tempfile
from collections.abc import Callable, Sequence
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


def _sources_sha256(sources: Sequence[str], read: Callable[[str], bytes]) -> str:
    h = hashlib.sha256()
    for rel in sources:
        h.update(rel.encode() + b"\0" + read(rel))
    return h.hexdigest()


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def code_version(root: Path = _ROOT) -> dict[str, Any]:
    """Git commit (if any), whether the deciding sources differ from it, and their content hash.

    The commit is only worth recording when it stays reachable (build from a commit on main, not
    from a branch that will be squashed); ``sources_sha256_at`` checks a recorded pair."""
    version: dict[str, Any] = {"sources_sha256": _sources_sha256(SOURCES, lambda rel: (root / rel).read_bytes()),
                               "sources": list(SOURCES)}
    try:
        version.update(git_commit=_git(root, "rev-parse", "HEAD"),
                       sources_dirty=bool(_git(root, "status", "--porcelain", "--", *SOURCES)))
    except (OSError, subprocess.CalledProcessError):
        version.update(git_commit=None, sources_dirty=None)
    return version


def sources_sha256_at(commit: str, sources: Sequence[str], root: Path = _ROOT) -> str:
    """The sources hash ``code_version`` would have recorded at ``commit``; one clear error when
    the commit is not an ancestor of this checkout's HEAD (e.g. squashed away: its objects may
    still lie in the repository, unreachable)."""
    try:
        _git(root, "merge-base", "--is-ancestor", commit, "HEAD")
    except subprocess.CalledProcessError as err:
        raise ValueError(f"commit {commit} is not in the history of {root}'s HEAD") from err
    return _sources_sha256(sources, lambda rel: subprocess.run(
        ["git", "show", f"{commit}:{rel}"], cwd=root, capture_output=True, check=True).stdout)


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


def sort_safetensors_metadata(path: Path) -> None:
    """Rewrite a safetensors header in place with its ``__metadata__`` entries sorted by key.

    Why: safetensors serialises the metadata from a Rust HashMap, whose order is random per
    process, so the same tensors gave files with different SHA-256 (measured: tiny-t5 rebuilt
    from main with every tensor and loss bit-identical, file hash different; ``save_model`` adds
    one metadata entry per tied weight). Readers parse the header as JSON, so the order means
    nothing to them; the header keeps its length (same entries, padded with spaces as written).
    """
    with open(path, "r+b") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
        text = json.dumps(header, separators=(",", ":")).encode()
        if len(text) > size:
            raise ValueError(f"{path}: the sorted safetensors header ({len(text)} bytes) outgrew "
                             f"the written one ({size} bytes)")
        f.seek(8)
        f.write(text.ljust(size, b" "))


def write_shipped(result: PretrainResult, zero_shot: dict[str, dict[str, Any]], command: str,
                  out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``<preset>.safetensors`` and ``<preset>.json`` atomically (both or neither replaced)."""
    out_dir = Path(out_dir or PRETRAINED_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    preset = result.bundle.preset
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".pretrain-") as tmp:
        tmp_weights = Path(tmp) / "weights.safetensors"
        save_model(result.bundle.model, str(tmp_weights), metadata={"preset": preset, "seed": str(result.seed)})
        sort_safetensors_metadata(tmp_weights)
        manifest = build_manifest(result, zero_shot, command, file_sha256(tmp_weights))
        tmp_manifest = Path(tmp) / "manifest.json"
        tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for path in (tmp_weights, tmp_manifest):
            path.chmod(0o644)  # tempfile makes 0600; shipped files are world-readable
        os.replace(tmp_weights, weights_path(preset, out_dir))
        os.replace(tmp_manifest, manifest_path(preset, out_dir))
    return weights_path(preset, out_dir), manifest_path(preset, out_dir)
