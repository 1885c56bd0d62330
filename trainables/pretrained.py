"""The shipped pretrained weights of the tiny stand-ins: where they live, their manifest, loading.

Why a manifest: a weights file alone says nothing about how it was made. Each shipped file
``assets/pretrained/<preset>.safetensors`` has ``<preset>.json`` beside it holding the seed, the
corpus hash, the steps, the final loss of each objective, the code version, the exact command
that rebuilt it, and the zero-shot accuracy of the weights on both synth benchmarks. Loading
checks the file's SHA-256 against the manifest, so a stale or corrupted file fails loudly
instead of silently changing every result of the embedded sweep.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_model
from torch import nn

from trainables.vocab import TINY_PRESETS, check_choice

PRETRAINED_DIR = Path(__file__).resolve().parent / "assets" / "pretrained"
INITS: tuple[str, ...] = ("pretrained", "random")
"""``pretrained``: the shipped weights (tiny presets) or the checkpoint (real presets);
``random``: the seeded random init (tiny and small presets only)."""
SHIPPED_PRESETS: tuple[str, ...] = TINY_PRESETS
"""Presets with shipped pretrained weights."""


def weights_path(preset: str, directory: Path = PRETRAINED_DIR) -> Path:
    return Path(directory) / f"{preset}.safetensors"


def manifest_path(preset: str, directory: Path = PRETRAINED_DIR) -> Path:
    return Path(directory) / f"{preset}.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(preset: str, directory: Path = PRETRAINED_DIR) -> dict[str, Any]:
    """The manifest of a shipped preset; one clear error when it is missing or unreadable."""
    check_choice("preset with shipped weights", preset, SHIPPED_PRESETS)
    path = manifest_path(preset, directory)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the pretrained {preset} weights are not built; "
                                f"run `python -m trainables.pretrain --preset {preset}` "
                                "or pass init='random'")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rebuild it with "
                         f"`python -m trainables.pretrain --preset {preset}`") from err


def verified_weights(preset: str, directory: Path = PRETRAINED_DIR) -> Path:
    """Path of the shipped weights after checking their SHA-256 against the manifest."""
    manifest = read_manifest(preset, directory)
    path = weights_path(preset, directory)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rebuild it with: {manifest.get('command')}")
    digest = file_sha256(path)
    if digest != manifest.get("weights_sha256"):
        raise ValueError(f"{path} has SHA-256 {digest[:16]}..., its manifest says "
                         f"{str(manifest.get('weights_sha256'))[:16]}...: the weights are stale or "
                         f"corrupted; rebuild them with: {manifest.get('command')}")
    return path


def load_shipped(model: nn.Module, preset: str, directory: Path = PRETRAINED_DIR) -> None:
    """Overwrite every tensor of a freshly built tiny model with the verified shipped weights."""
    path = verified_weights(preset, directory)
    try:
        load_model(model, str(path), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the {preset} preset's architecture (were the toy "
                         f"sizes changed?); rebuild it with: {read_manifest(preset, directory).get('command')}"
                         f" ({str(err).splitlines()[0]})") from err


def recorded_zero_shot(preset: str, benchmark: str, directory: Path = PRETRAINED_DIR) -> dict[str, Any] | None:
    """The manifest's zero-shot entry ({val, test, chance_val, chance_test, inputs_sha256}) of a
    shipped preset on a benchmark; None when the preset ships no weights or it was not scored."""
    if preset not in SHIPPED_PRESETS or not manifest_path(preset, directory).is_file():
        return None
    return read_manifest(preset, directory).get("zero_shot", {}).get(benchmark)
