"""What a trial feeds the vision model: pixels (computed per batch) or cached frozen-ViT features.

Why: no method trains the ViT, and scoring (and training without augmentation) feeds it the same
images through the same deterministic transform in every epoch of every trial. The cache stores
the frozen trunk's output once per node (trainables.feature_store) and the trial feeds that
instead of pixels.

What is cached, exactly: transformers' ``InstructBlipVisionModel`` computes
``last_hidden_state = post_layernorm(encoder(embeddings(pixels)))`` (and a pooler output nothing
downstream reads); the Q-Former cross-attends to ``last_hidden_state``. ``post_layernorm``
TRAINS in every method (peft_targeting.ALWAYS_TRAINABLE_PREFIXES), so the cache holds the frozen
part only, ``encoder(embeddings(pixels))`` (the "trunk"), and ``accept_features`` lets the vision
model take those features in place of pixels: a 3-D input (batch, tokens, hidden) is the trunk's
output and only the trainable ``post_layernorm`` runs on it; a 4-D input (batch, 3, H, W) is
pixels and runs the whole model as before. Everything after the vision model (Q-Former,
projection, LLM, the batched scorer) is transformers' and this project's code, unchanged.

Key of an entry (sha256 of): the trunk's weights and config (a content hash: a different
checkpoint never matches), the image's decoded pixels, the eval transform's parameters, the
compute precision, the weight dtype and the device type.

When it is used: always for val/test scoring; for training only when augmentation is off (with
random crops every epoch sees new pixels). Then every image a trial will see is cached before
its first epoch and the trunk's weights leave the device (``release_trunk``: moved to the meta
device, shapes kept for the parameter accounting), which the planner counts as
``vit_resident=False``.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.instructblip.modeling_instructblip import InstructBlipVisionModel

from trainables.batching import EncodedProblem, stack_images
from trainables.config import TrialConfig
from trainables.data.images import ImageTransform
from trainables.feature_store import Entry, FeatureStore
from trainables.step import Precision, unwrap

METRIC_KEYS: tuple[str, ...] = ("vit_cache_hits", "vit_cache_misses", "vit_cache_seconds_saved")
"""Reported every epoch, cumulative over the trial (definitions: ``CachedInputs.metrics``)."""


class FeatureInputVisionModel(InstructBlipVisionModel):
    """InstructBLIP's vision model that also accepts its frozen trunk's output (see module doc)."""

    def forward(self, pixel_values: torch.Tensor | None = None, interpolate_pos_encoding: bool = False,
                **kwargs) -> BaseModelOutputWithPooling:
        if pixel_values is None or pixel_values.dim() != 3:
            if self.embeddings.patch_embedding.weight.is_meta:
                raise RuntimeError("the ViT trunk was released (every image was to come from the "
                                   "feature cache) but pixels were passed")
            return super().forward(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        # The tail of InstructBlipVisionModel.forward, on the cached trunk output.
        last_hidden_state = self.post_layernorm(pixel_values)
        pooled = self.post_layernorm(last_hidden_state[:, 0, :])
        return BaseModelOutputWithPooling(last_hidden_state=last_hidden_state, pooler_output=pooled)


def vision_model_of(model: nn.Module) -> InstructBlipVisionModel:
    return unwrap(model).vision_model


def accept_features(model: nn.Module) -> None:
    """Let ``model``'s vision model take trunk features as well as pixels. The class is swapped
    in place (not the module): parameter names, the state dict and peft's wrapping stay as they
    are, so checkpoints and LoRA targeting cannot tell the difference."""
    vision = vision_model_of(model)
    if not isinstance(vision, InstructBlipVisionModel):
        raise TypeError(f"expected an InstructBlipVisionModel, got {type(vision).__name__}")
    vision.__class__ = FeatureInputVisionModel


def trunk(vision: InstructBlipVisionModel, pixels: torch.Tensor) -> torch.Tensor:
    """The frozen part of the vision model: ``encoder(embeddings(pixels))``, before post_layernorm."""
    return vision.encoder(inputs_embeds=vision.embeddings(pixels)).last_hidden_state


def release_trunk(model: nn.Module) -> None:
    """Free the trunk's weights (moved to the meta device; shapes, names and counts stay)."""
    vision = vision_model_of(model)
    vision.embeddings.to("meta")
    vision.encoder.to("meta")


def vision_fingerprint(vision: InstructBlipVisionModel) -> str:
    """sha256 of the trunk's config and of every trunk tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    config = {k: v for k, v in vision.config.to_dict().items()
              if not k.startswith("_") and k != "transformers_version"}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for part in (vision.embeddings, vision.encoder):
        for name, tensor in sorted([*part.named_parameters(), *part.named_buffers()]):
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def image_digest(image: torch.Tensor) -> bytes:
    """sha256 of a decoded uint8 image (shape included)."""
    return hashlib.sha256(str(tuple(image.shape)).encode() + image.contiguous().numpy().data).digest()


class PixelInputs:
    """Pixels per batch, the ViT inside the model: the behaviour without the cache."""

    def __init__(self, transform: ImageTransform, device: torch.device) -> None:
        self.transform, self.device = transform, device

    def train_inputs(self, chunk: Sequence[EncodedProblem], generator: torch.Generator) -> torch.Tensor:
        return self.transform(stack_images(chunk), train=True, generator=generator).to(self.device)

    def eval_inputs(self, chunk: Sequence[EncodedProblem]) -> torch.Tensor:
        return self.transform(stack_images(chunk), train=False).to(self.device)

    def metrics(self) -> dict[str, float]:
        return {}


class CachedInputs(PixelInputs):
    """Trunk features from the node's cache for scoring, and for training when ``train_from_cache``
    (augmentation off); pixels otherwise. ``prepare`` fills the cache for a trial's images."""

    def __init__(self, model: nn.Module, transform: ImageTransform, device: torch.device,
                 precision: Precision, store_root: str, max_bytes: int, train_from_cache: bool,
                 batch_size: int) -> None:
        super().__init__(transform, device)
        self.model, self.precision, self.batch_size = model, precision, batch_size
        self.hits = 0
        self.computed: list[str] = []
        """Keys of the entries this trial computed (its misses)."""
        self._avoided_s = 0.0  # sum over served features of their entry's measured compute cost
        self._cache_s = 0.0  # wall seconds spent in the cache, this trial's ViT work on misses included
        self._depth = 0
        with self._charged():  # hashing the trunk's weights is the cache's cost too
            vision = vision_model_of(model)
            # A ViT with attention dropout would see new features every training step.
            self.train_from_cache = train_from_cache and not vision.config.attention_dropout
            accept_features(model)
            fingerprint = vision_fingerprint(vision)
            self.store = FeatureStore(store_root, fingerprint[:32], max_bytes)
            self._salt = json.dumps({"vision": fingerprint, "transform": transform.signature(),
                                     "precision": precision.name, "device": device.type,
                                     "weights": str(vision.embeddings.patch_embedding.weight.dtype)},
                                    sort_keys=True).encode()
        self._key_of: dict[int, tuple[torch.Tensor, str]] = {}  # id(image) -> (image, key)
        self._image_of: dict[str, torch.Tensor] = {}
        self._entries: dict[str, Entry] = {}

    @contextmanager
    def _charged(self) -> Iterator[None]:
        """Charge the wall time of the block to the cache, once even when blocks nest (a serve
        that has to prepare an image first)."""
        self._depth += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth:
                self._cache_s += time.perf_counter() - start

    def key(self, image: torch.Tensor) -> str:
        """The cache key of a decoded image (memoised per image tensor)."""
        known = self._key_of.get(id(image))
        if known is None:
            known = (image, hashlib.sha256(self._salt + image_digest(image)).hexdigest())
            self._key_of[id(image)] = known
            self._image_of[known[1]] = image
        return known[1]

    def prepare(self, problems: Sequence[EncodedProblem]) -> None:
        """Cache (computing what is missing on this node) and map every image of ``problems``;
        then, if training reads the cache too, release the trunk: nothing needs it any more."""
        with self._charged():
            keys = [k for k in dict.fromkeys(self.key(p.image) for p in problems) if k not in self._entries]
            computed: list[str] = []
            while keys:  # an entry found corrupt (or evicted meanwhile) is computed again
                computed += self.store.fill(keys, self._compute, self.batch_size)
                opened = {k: self.store.open(k) for k in keys}
                self._entries.update({k: e for k, e in opened.items() if e is not None})
                keys = [k for k, e in opened.items() if e is None]
            self.computed += computed
            if computed:
                self.store.evict(protect=self._entries)
            if self.train_from_cache:
                release_trunk(self.model)

    @torch.no_grad()
    def _compute(self, keys: Sequence[str]) -> list[tuple[torch.Tensor, float]]:
        """Transform + trunk for ``keys``' images, as the model would run them in scoring."""
        start = time.perf_counter()
        vision = vision_model_of(self.model)
        if vision.embeddings.patch_embedding.weight.is_meta:
            raise RuntimeError(f"{len(keys)} image(s) were not cached before the ViT trunk was "
                               "released; prepare() must see every image of the trial")
        was_training = vision.training
        vision.eval()
        try:
            pixels = self.transform(torch.stack([self._image_of[k] for k in keys]), train=False)
            with self.precision.autocast():
                out = trunk(vision, pixels.to(self.device)).to("cpu")
        finally:
            vision.train(was_training)
        seconds = (time.perf_counter() - start) / len(keys)
        return [(row, seconds) for row in out]

    def _features(self, chunk: Sequence[EncodedProblem]) -> torch.Tensor:
        with self._charged():
            keys = [self.key(p.image) for p in chunk]
            if any(k not in self._entries for k in keys):
                self.prepare([p for p, k in zip(chunk, keys) if k not in self._entries])
            entries = [self._entries[k] for k in keys]
            features = torch.stack([e.tensor for e in entries]).to(self.device)
            self.hits += len(entries)
            self._avoided_s += sum(e.compute_s for e in entries)
        return features

    def train_inputs(self, chunk: Sequence[EncodedProblem], generator: torch.Generator) -> torch.Tensor:
        if self.train_from_cache:
            return self._features(chunk)
        return super().train_inputs(chunk, generator)

    def eval_inputs(self, chunk: Sequence[EncodedProblem]) -> torch.Tensor:
        return self._features(chunk)

    def metrics(self) -> dict[str, float]:
        """Cumulative over the trial (its process, since a resume):

        - ``vit_cache_hits``: features served from the cache (each use counts: an image scored in
          5 epochs is 5 hits);
        - ``vit_cache_misses``: entries this trial computed (the others' were on the node already);
        - ``vit_cache_seconds_saved``: the ViT seconds the hits avoided minus the cache's own cost,
          = sum over hits of the entry's per-image ViT seconds (transform + trunk, its share of a
          batch, measured once by the process that computed it) - every wall second this trial
          spent in the cache: fingerprinting the trunk, hashing images, computing its misses,
          waiting for entries other trials were computing, writing, verifying and serving.
          Equivalently (hits - misses) x per-image ViT seconds - overhead: a miss's computation is
          not saved, it moved. It is what the cache took off this trial's wall time, so it is
          only as large as the ViT's share of the work (~2.5% of a tiny preset's training FLOPs,
          ~50% of Flan-T5-XL's: benchmarks.flop_split); negative when the trial computed entries
          it then barely used. The ViT's memory a released trunk frees is not counted here."""
        return {"vit_cache_hits": float(self.hits), "vit_cache_misses": float(len(self.computed)),
                "vit_cache_seconds_saved": self._avoided_s - self._cache_s}


def vision_inputs(cfg: TrialConfig, model: nn.Module, transform: ImageTransform, precision: Precision,
                  device: torch.device) -> PixelInputs:
    """The trial's vision inputs: cached features unless ``cfg.vit_cache`` is off."""
    if not cfg.vit_cache:
        return PixelInputs(transform, device)
    return CachedInputs(model, transform, device, precision, cfg.vit_cache_dir,
                        max_bytes=int(cfg.vit_cache_max_gb * 2**30), train_from_cache=not cfg.augment,
                        batch_size=cfg.eval_batch_size)
