"""One real-size CPU trial in its own process, for tests/trainables/test_real_size.py.

Why a child process: peak RSS (``ru_maxrss``) is a high-water mark of the whole process, so each
configuration needs a fresh one. It drives the project's own trial path (trainables.loop:
build_trial + run_trial: data, batching, train steps, scoring, adapter checkpoint), then
reloads the checkpoint into the same model (a second 4 B model would double the memory), and
prints one JSON line: reports, the reload check, the measured peak RSS and the planner's
estimate for this exact configuration.

    python -m tests.trainables.real_size_child '{"llm": "flan-t5-xl", ...}'   # TrialConfig keys
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from orchestrator.driver.plan import memory_estimate
from trainables.checkpoint import load_checkpoint, trainable_state
from trainables.config import TrialConfig
from trainables.loop import build_trial, run_trial
from trainables.runsetup import memory_setup, peak_memory_bytes
from trainables.step import make_optimizer, unwrap


def main(raw: str) -> dict:
    cfg = TrialConfig.from_dict(json.loads(raw))
    start = time.perf_counter()
    trial = build_trial(cfg, "cpu")
    built = time.perf_counter() - start
    reports, kept = [], Path(tempfile.mkdtemp(prefix="real-size-ckpt-"))

    def report(metrics, checkpoint):
        reports.append(metrics)
        if checkpoint is not None:
            for f in Path(checkpoint).rglob("*"):
                if f.is_file():
                    target = kept / f.relative_to(checkpoint)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(f.read_bytes())

    run_trial(cfg, report=report, trial=trial)
    saved = trainable_state(trial.model)
    with torch.no_grad():  # wipe what trains, then restore it from the checkpoint
        for p in trial.model.parameters():
            if p.requires_grad:
                p.zero_()
    load_checkpoint(kept, trial.model, make_optimizer(trial.model, cfg.lr, cfg.weight_decay), cfg.to_dict())
    restored = trainable_state(trial.model)
    vit_resident = next(unwrap(trial.model).vision_model.parameters()).device.type != "meta"
    setup = memory_setup(cfg, trial.bundle, trial.splits, torch.device("cpu"),
                         trial.precision.dtype is not None, vit_resident)
    setup = type(setup)(**{**vars(setup), "batch_size": trial.settings.batch_size,
                           "eval_batch_size": trial.settings.eval_batch_size})
    estimate = memory_estimate(cfg.llm, cfg.peft, setup, cfg.text_layers)
    return {
        "reports": reports, "build_s": built, "total_s": time.perf_counter() - start,
        "reload_equal": saved.keys() == restored.keys() and all(torch.equal(saved[k], restored[k]) for k in saved),
        "adapter_files": sorted(str(p.relative_to(kept)) for p in kept.rglob("adapter_model.safetensors")),
        "lora_tensors": sum(".lora_" in k for k in saved),
        "trainable_dtypes": sorted({str(v.dtype) for v in saved.values()}),
        "frozen_dtypes": sorted({str(p.dtype) for p in trial.model.parameters() if not p.requires_grad}),
        "peak_rss_bytes": peak_memory_bytes(torch.device("cpu")), "estimate": estimate.as_dict(),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), default=str), flush=True)
