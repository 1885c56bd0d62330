"""Batch-assembly throughput: prepared Parquet (PNG decoded once) vs decoding the raw tree every epoch.

Both sides build the same training batches (uint8 images -> ImageTransform with random resized
crop + flip + normalisation) for the same number of epochs. "raw" reads and decodes every PNG
from the official layout each epoch, as a naive dataset would; "prepared" pays
ensure_prepared-style reading once (load_examples from the prepared Parquet) and then only
stacks tensors. The one-time costs are included in each side's wall time.

    python -m benchmarks.data_throughput [--benchmark sample-scienceqa] [--data-root DIR]
                                         [--image-size 224] [--epochs 3] [--batch-size 16]
Ends with one JSON line: ratio first.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from trainables.data.examples import load_examples
from trainables.data.images import CLIP_MEAN, CLIP_STD, ImageTransform, decode_image
from trainables.data.prepare import ensure_prepared, read_records
from trainables.data.sources import ASSETS
from trainables.data.synth import write_synth
from trainables.defaults import SYNTH_SEED, SYNTH_SPLIT_SIZES
from trainables.vocab import BENCHMARKS


def raw_image_paths(benchmark: str, root: Path, prepared: Path) -> list[Path]:
    """Where each training problem's PNG lies in the official tree (pids from the prepared split)."""
    pids = [r.pid for r in read_records(prepared, "train")]
    if benchmark.endswith("iconqa"):
        data = root / "iconqa_data" if (root / "iconqa_data").is_dir() else root
        return [next((data / "iconqa").glob(f"*/choose_txt/{pid}/image.png")) for pid in pids]
    problems = json.loads((root / "problems.json").read_text())
    return [root / "images" / problems[p]["split"] / p / problems[p]["image"] for p in pids]


def run_epochs(get_images, n: int, epochs: int, batch: int, transform: ImageTransform) -> float:
    """Assemble every training batch for `epochs` epochs; returns seconds."""
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).tolist()
        for i in range(0, n, batch):
            pixels = transform(get_images(order[i:i + batch]), train=True, generator=gen)
            assert pixels.shape[0] == len(order[i:i + batch])
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="sample-scienceqa", choices=BENCHMARKS)
    p.add_argument("--data-root", type=Path, help="official layout of a real benchmark")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    torch.set_num_threads(1)
    size, transform = args.image_size, ImageTransform(args.image_size, CLIP_MEAN, CLIP_STD, augment=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.benchmark.startswith("synth-"):
            root = write_synth(args.benchmark, Path(tmp) / "raw", SYNTH_SEED, SYNTH_SPLIT_SIZES)
        elif args.benchmark.startswith("sample-"):
            root = ASSETS / args.benchmark.removeprefix("sample-")
        else:
            root = args.data_root
        prepared = ensure_prepared(args.benchmark, data_root=root, cache_dir=Path(tmp) / "cache")
        paths = raw_image_paths(args.benchmark, root, prepared)

        t0 = time.perf_counter()
        examples = load_examples(prepared, "train", size)  # decoded once
        images = torch.stack([e.image for e in examples])
        load_s = time.perf_counter() - t0
        prep_s = load_s + run_epochs(lambda idx: images[idx], len(examples), args.epochs, args.batch_size, transform)

        def decode_batch(idx: list[int]) -> torch.Tensor:
            return torch.stack([decode_image(paths[i].read_bytes(), size) for i in idx])
        raw_s = run_epochs(decode_batch, len(paths), args.epochs, args.batch_size, transform)

    n = len(paths) * args.epochs
    result = {"ratio_prepared_vs_raw": round(raw_s / prep_s, 3),
              "prepared_examples_per_s": round(n / prep_s, 1), "raw_examples_per_s": round(n / raw_s, 1),
              "prepared_one_time_load_s": round(load_s, 3), "benchmark": args.benchmark,
              "train_examples": len(paths), "epochs": args.epochs, "image_size": size,
              "batch_size": args.batch_size}
    print(f"{args.benchmark}: {n} examples over {args.epochs} epochs; prepared {prep_s:.2f}s "
          f"(incl. {load_s:.2f}s one-time decode), raw tree {raw_s:.2f}s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
