"""Image decoding (once per trial) and the per-batch transform, in torch only (no torchvision).

Decoding: PNG bytes -> RGB (transparent pixels composited on white, as IconQA's icons are
drawn on transparent backgrounds) -> bicubic resize to a square side S -> uint8 (3, S, S).
Transform: training crops with random resized crop (area scale 0.5-1, aspect 3/4-4/3, as the
authors did) and flips horizontally, both batched through one affine grid sample; evaluation
resizes plainly; both then normalise with the model's mean/std.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
CROP_SCALE: tuple[float, float] = (0.5, 1.0)
CROP_RATIO: tuple[float, float] = (3 / 4, 4 / 3)
_CROP_TRIES = 10  # torchvision's number of rejection-sampling attempts


def decode_image(data: bytes, side: int) -> torch.Tensor:
    """PNG (or any PIL-readable) bytes -> uint8 tensor (3, side, side)."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im.alpha_composite(rgba)
        rgb = im.convert("RGB")
        if rgb.size != (side, side):
            rgb = rgb.resize((side, side), Image.Resampling.BICUBIC)
        arr = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class ImageTransform:
    """uint8 images (B, 3, S, S) -> normalised float32 pixel values (B, 3, size, size)."""

    def __init__(self, size: int, mean: tuple[float, float, float], std: tuple[float, float, float],
                 augment: bool) -> None:
        if size <= 0:
            raise ValueError(f"image size must be positive, got {size}")
        self.size = size
        self.augment = augment
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def signature(self) -> dict[str, object]:
        """Everything the deterministic (evaluation) output depends on besides the image: part
        of the feature cache's key (trainables.vision_features)."""
        return {"size": self.size, "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
                "resize": "bilinear-antialias", "scale": "1/255"}

    def __call__(self, images: torch.Tensor, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images (B, 3, S, S), got {images.dtype} {tuple(images.shape)}")
        x = images.float().div_(255.0)
        if train and self.augment:
            x = self._crop_flip(x, generator)
        elif x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def _crop_flip(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """Random resized crop + flip for the whole batch with one grid_sample call."""
        b = x.shape[0]
        w, h = sample_crop_sizes(b, gen)  # fractions of the image side
        x0 = torch.rand(b, generator=gen) * (1 - w)
        y0 = torch.rand(b, generator=gen) * (1 - h)
        flip = torch.rand(b, generator=gen) < 0.5
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = torch.where(flip, -w, w)
        theta[:, 1, 1] = h
        theta[:, 0, 2] = 2 * x0 + w - 1  # crop centre in [-1, 1] coordinates
        theta[:, 1, 2] = 2 * y0 + h - 1
        grid = F.affine_grid(theta, [b, 3, self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample_crop_sizes(b: int, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop width/height as fractions of a square image, torchvision's rejection sampling:
    up to 10 draws of (area scale, log-uniform aspect); the first that fits wins, else the
    whole image."""
    scale = torch.empty(b, _CROP_TRIES).uniform_(*CROP_SCALE, generator=gen)
    log_r = torch.empty(b, _CROP_TRIES).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=gen)
    ratio = log_r.exp()
    w = (scale * ratio).sqrt()
    h = (scale / ratio).sqrt()
    fits = (w <= 1) & (h <= 1)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((b,), -1))
    idx = first.clamp(min=0).unsqueeze(1)
    ok = first >= 0
    return (torch.where(ok, w.gather(1, idx).squeeze(1), torch.ones(b)),
            torch.where(ok, h.gather(1, idx).squeeze(1), torch.ones(b)))
