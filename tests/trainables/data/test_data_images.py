"""Decoding once and the batched torch transform (random resized crop + flip, resize, normalise)."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from trainables.data.images import CLIP_MEAN, CLIP_STD, ImageTransform, decode_image, sample_crop_sizes


def _png(mode: str, colour, size=(40, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_resizes_to_a_square_uint8_and_puts_transparency_on_white() -> None:
    img = decode_image(_png("RGB", (10, 20, 30)), 16)
    assert img.dtype == torch.uint8 and img.shape == (3, 16, 16)
    assert img[:, 8, 8].tolist() == [10, 20, 30]
    assert decode_image(_png("RGBA", (0, 0, 0, 0)), 8)[:, 0, 0].tolist() == [255, 255, 255]


def _batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (4, 3, 24, 24), generator=g, dtype=torch.uint8)


def test_eval_is_a_plain_resize_then_clip_normalisation() -> None:
    t = ImageTransform(24, CLIP_MEAN, CLIP_STD, augment=True)
    x = _batch()
    out = t(x, train=False)
    expected = (x.float() / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert ImageTransform(12, CLIP_MEAN, CLIP_STD, augment=True)(x, train=False).shape == (4, 3, 12, 12)


def test_training_crops_are_seeded_and_switchable() -> None:
    t = ImageTransform(16, (0.5,) * 3, (0.5,) * 3, augment=True)
    x = _batch()
    a = t(x, train=True, generator=torch.Generator().manual_seed(1))
    b = t(x, train=True, generator=torch.Generator().manual_seed(1))
    c = t(x, train=True, generator=torch.Generator().manual_seed(2))
    assert a.shape == (4, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    off = ImageTransform(16, (0.5,) * 3, (0.5,) * 3, augment=False)
    assert torch.equal(off(x, train=True), off(x, train=False))


def test_crop_stays_inside_the_image_and_flip_mirrors() -> None:
    # Left half black, right half white: a flip swaps which side is bright.
    img = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    img[..., 16:] = 255
    t = ImageTransform(32, (0.0,) * 3, (1.0,) * 3, augment=True)
    seen = set()
    for seed in range(20):
        out = t(img, train=True, generator=torch.Generator().manual_seed(seed))
        assert out.min() >= 0 and out.max() <= 1  # no padding from outside the image
        seen.add(bool(out[0, 0, :, 0].mean() > out[0, 0, :, -1].mean()))
    assert seen == {True, False}


def test_crop_sizes_follow_scale_and_ratio() -> None:
    w, h = sample_crop_sizes(2000, torch.Generator().manual_seed(0))
    area = w * h
    assert area.min() >= 0.5 - 1e-6 and area.max() <= 1 + 1e-6
    assert (w <= 1).all() and (h <= 1).all()
    ratio = w / h
    assert ratio.min() >= 3 / 4 - 1e-6 and ratio.max() <= 4 / 3 + 1e-6


def test_rejects_non_uint8_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageTransform(8, CLIP_MEAN, CLIP_STD, augment=False)(torch.zeros(1, 3, 8, 8), train=False)
