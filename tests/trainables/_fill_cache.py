"""Helper process for test_feature_store: fill the ViT feature cache for images with tiny-t5.

    python _fill_cache.py ROOT N OUT.json BARRIER

Twice (N images with the stripe locks waited for up to 600 s, then N other images with a 0 s
wait, i.e. no waiting: the race), it waits until a second process reached the same point
(BARRIER.<phase>.* files) so that both fill at once, counts every image whose features it
computed, and writes what it saw as JSON.
"""
import json
import sys
import time
from pathlib import Path

import torch

from trainables.batching import EncodedProblem
from trainables.data.images import ImageTransform
from trainables.presets import build_model
from trainables.step import resolve_precision
from trainables.vision_features import CachedInputs


def _meet(barrier: str, phase: str) -> None:
    """Both processes start filling together."""
    Path(f"{barrier}.{phase}.{time.time_ns()}").touch()
    deadline = time.monotonic() + 60
    while len(list(Path(barrier).parent.glob(f"{Path(barrier).name}.{phase}.*"))) < 2 \
            and time.monotonic() < deadline:
        time.sleep(0.01)


def main(root: str, n: int, out: str, barrier: str) -> None:
    bundle = build_model("tiny-t5", seed=0)
    transform = ImageTransform(bundle.image_size, bundle.image_mean, bundle.image_std, augment=False)
    vision = CachedInputs(bundle.model, transform, torch.device("cpu"), resolve_precision("fp32", "cpu"), root,
                          max_bytes=2**30, train_from_cache=False, batch_size=4)
    compute = vision._compute

    def slow_compute(keys):  # long enough for the two processes to overlap
        time.sleep(0.05)
        return compute(keys)

    vision._compute = slow_compute
    report = {}
    for phase, lock_timeout in (("locked", 600.0), ("race", 0.0)):
        vision.store.lock_timeout_s = lock_timeout
        seed = 0 if phase == "locked" else n
        images = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8,
                                generator=torch.Generator().manual_seed(seed + i)) for i in range(n)]
        problems = [EncodedProblem(str(i), image, (1,), (1,), ((1,),), 0) for i, image in enumerate(images)]
        _meet(barrier, phase)
        before = len(vision.computed)
        vision.prepare(problems)
        features = vision.eval_inputs(problems)
        report[phase] = {"keys": [vision.key(p.image) for p in problems], "computed": vision.computed[before:],
                         "namespace": vision.store.dir.name, "checksum": float(features.double().sum())}
    Path(out).write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
