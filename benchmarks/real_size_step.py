"""Real-size training steps with random weights: measured peak memory vs the planner, speed.

    python -m benchmarks.real_size_step [--llm flan-t5-xl --llm vicuna-7b] [--steps 2]
        [--batch-size 2] [--rss-budget-gib 15] [--device cpu|cuda]

For each LLM and for the baseline, qformer_lora/all r8 and both_lora/all r8 it runs, each in its
own process (a peak is a per-process high-water mark), the project's trial path at real size
(``random_weights``: full-size architecture, deterministic random bf16 weights, stand-in
tokenizers; trainables.loop.build_trial on sample-iconqa's real images and prompts), then
``--steps`` optimizer steps at ``--batch-size`` problems each (one micro-batch) and one scoring
call. It reports the measured peak (CPU: peak RSS; CUDA: the allocator's reserved peak) against
orchestrator.driver.plan's estimate for exactly that configuration (ratio), the median step time,
samples/s and, on CUDA, MFU from the planner's FLOPs.

On CPU, Flan-T5-XL runs at full depth; Vicuna-7B keeps its full width but only as many LLM
layers as fit ``--rss-budget-gib`` by the planner's own estimate for the very problems it will
train on, one depth for all three methods so that their step times compare (the output says
how many): its 32 layers alone are 13 GB of bf16 weights, and the machine is shared. Each
configuration also writes its adapter checkpoint, as a trial does. The first step is timed too
(CPU has no warm-up to speak of); the median of the steps is reported. Ends with ONE JSON line, ratios first.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from trainables.methods import PeftSetup
from trainables.vocab import PRESETS

METHODS = (PeftSetup("baseline", "none", 0), PeftSetup("qformer_lora", "all", 8),
           PeftSetup("both_lora", "all", 8))
FEWER_LAYERS_ON_CPU = ("vicuna-7b",)
"""Flan-T5-XL always runs at full depth; Vicuna-7B's 32 layers may not fit the CPU budget."""
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "A10G": 70e12, "L4": 121e12}
"""Dense bf16 tensor-core peak FLOP/s by device-name substring (vendor datasheets)."""


def data_setup(config: dict[str, Any]):
    """The MemorySetup the child will have: the stand-in tokenizers on the same problems."""
    import dataclasses

    from trainables.batching import encode_examples
    from trainables.config import TrialConfig
    from trainables.data.examples import load_examples
    from trainables.data.prepare import ensure_prepared
    from trainables.presets import build_model
    from trainables.random_init import standin_tokenizers
    from trainables.runsetup import memory_setup
    cfg = TrialConfig.from_dict(config)
    meta = build_model(cfg.llm, meta=True)
    qtok, ltok = standin_tokenizers(meta.family)
    bundle = dataclasses.replace(meta, qformer_tokenizer=qtok, llm_tokenizer=ltok)
    prepared = ensure_prepared(cfg.benchmark, cache_dir=cfg.cache_dir)
    limits = {"train": cfg.max_train_examples, "val": cfg.max_eval_examples}
    splits = {s: encode_examples(load_examples(prepared, s, bundle.image_size, n), bundle, cfg.max_prompt_tokens)
              for s, n in limits.items()}
    return memory_setup(cfg, bundle, splits, torch.device("cpu"), True)


def max_text_layers(config: dict[str, Any], budget_bytes: int) -> int | None:
    """The most LLM layers whose CPU estimate for ``config`` fits ``budget_bytes`` (None: all)."""
    from orchestrator.driver.plan import memory_estimate
    from trainables.methods import PeftSetup as Peft
    from trainables.presets import model_config
    llm = config["llm"]
    peft = Peft(config["method"], config["sublayer"], config["rank"])
    text = model_config(llm).text_config
    full = getattr(text, "num_layers", None) or text.num_hidden_layers
    setup = data_setup(config)

    def fits(layers: int) -> bool:
        return memory_estimate(llm, peft, setup, layers).peak_bytes <= budget_bytes
    if fits(full):
        return None
    low, high = 1, full  # the estimate grows with depth: bisect for the deepest that fits
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def common_text_layers(configs: list[dict[str, Any]], budget_bytes: int) -> int | None:
    """One depth for every method of an LLM (the deepest all fit): step times and samples/s
    compare methods only when they run the same model."""
    depths = [max_text_layers(c, budget_bytes) for c in configs]
    return None if all(d is None for d in depths) else min(d for d in depths if d is not None)


def child_config(llm: str, peft: PeftSetup, batch: int, cache: str, text_layers: int | None,
                 checkpointing: str = "off", grad_accum: int = 1) -> dict:
    """The TrialConfig of one measurement (a toy preset runs as itself: the CPU flow tests)."""
    from trainables.vocab import REAL_PRESETS
    real = llm in REAL_PRESETS
    return {"method": peft.method, "sublayer": peft.sublayer, "rank": peft.rank, "llm": llm,
            "random_weights": real, "text_layers": text_layers, "benchmark": "sample-iconqa",
            "cache_dir": cache, "max_train_examples": batch, "max_eval_examples": batch, "epochs": 1,
            "batch_size": batch, "grad_accum": grad_accum, "eval_batch_size": batch, "vit_cache": False,
            "num_threads": max(1, torch.get_num_threads()), "activation_checkpointing": checkpointing,
            **({} if real else {"weight_dtype": "bf16"})}


def measure(config: dict[str, Any], device: str, steps: int, budget: int | None = None) -> dict[str, Any]:
    """In this process: build the trial (settings fitted to ``budget`` bytes when the config's
    checkpointing is "auto"), ``steps`` optimizer steps at its micro-batch, one scoring call."""
    from orchestrator.driver.plan import memory_estimate, model_shape, train_flops_per_example
    from trainables.batching import collate_train
    from trainables.checkpoint import save_checkpoint, trainable_state
    from trainables.config import TrialConfig
    from trainables.loop import build_trial, evaluate
    from trainables.runsetup import memory_setup
    from trainables.step import make_optimizer, train_step
    cfg = TrialConfig.from_dict(config)
    dev = torch.device(device)
    trial = build_trial(cfg, dev, memory_budget=budget)
    batch_size = trial.settings.batch_size
    problems = (trial.splits["train"] * batch_size)[:batch_size]
    optimizer = make_optimizer(trial.model, cfg.lr, cfg.weight_decay)
    gen = torch.Generator().manual_seed(0)
    times, losses = [], []
    trial.model.train()
    for _ in range(steps):
        batch = collate_train(problems, trial.vision.train_inputs(problems, gen), trial.spec).to(dev)
        _sync(dev)
        start = time.perf_counter()
        losses.append(train_step(trial.model, [batch], optimizer, trial.precision, trial.scaler).loss)
        _sync(dev)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    evaluate(trial, "val")
    score_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="real-size-ckpt-") as tmp:  # as the trial does each epoch
        state = trainable_state(trial.model)
        save_checkpoint(Path(tmp), trial.model, last=state, best=trainable_state(trial.model),
                        optimizer=optimizer, loop_state={"epoch": 1}, config=cfg.to_dict())
    setup = memory_setup(cfg, trial.bundle, trial.splits, dev, trial.precision.dtype is not None)
    setup = type(setup)(**{**vars(setup), "batch_size": batch_size,
                           "eval_batch_size": trial.settings.eval_batch_size,
                           "activation_checkpointing": trial.settings.activation_checkpointing})
    estimate = memory_estimate(cfg.llm, cfg.peft, setup, cfg.text_layers) if cfg.random_weights \
        else trial.settings.estimate
    bundle, shape = model_shape(cfg.llm, cfg.text_layers)
    from trainables.accounting import count_parameters
    rep = count_parameters(trial.model, cfg.peft, shape.family)
    flops = train_flops_per_example(shape, setup.prompt_tokens, setup.answer_tokens,
                                    {"llm": rep.lora_params_llm}, rep.trainable) * batch_size
    step_s = statistics.median(times)
    return {"llm": cfg.llm, "row": cfg.peft.row_label, "rank": cfg.rank, "device": device,
            "text_layers": cfg.text_layers, "batch": batch_size, "losses": losses,
            "activation_checkpointing": trial.settings.activation_checkpointing,
            "eval_batch": trial.settings.eval_batch_size,
            "step_s": step_s, "samples_per_s": batch_size / step_s, "score_s": score_s,
            "flops_per_step": flops, "peak_bytes": device_peak_bytes(dev),
            "est_peak_bytes": estimate.peak_bytes, "estimate": estimate.as_dict(),
            "gpu_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None}


def device_peak_bytes(device: torch.device) -> int:
    """CPU: peak RSS. CUDA: the allocator's reserved peak plus what the device holds outside it
    (context, cuBLAS workspace: used - reserved now), i.e. the peak nvidia-smi would show."""
    from trainables.runsetup import peak_memory_bytes
    if device.type != "cuda":
        return peak_memory_bytes(device)
    free, total = torch.cuda.mem_get_info(device)
    outside = max(0, total - free - torch.cuda.memory_reserved(device))
    return peak_memory_bytes(device) + outside


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mfu(result: dict[str, Any]) -> float | None:
    """Model FLOPs utilisation of a CUDA step against the device's dense bf16 peak."""
    name = result.get("gpu_name") or ""
    peak = next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
    return None if peak is None else result["flops_per_step"] / result["step_s"] / peak


def run_child(config: dict, device: str, steps: int, timeout: int, budget: int | None = None) -> dict[str, Any]:
    """``measure`` in a fresh process (its own peak)."""
    cmd = [sys.executable, "-m", "benchmarks.real_size_step", "--child", json.dumps(config),
           "--device", device, "--steps", str(steps)] + ([] if budget is None else ["--budget", str(budget)])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{config['llm']} {config['method']}: child failed\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'llm':<11}{'layers':>7} {'row':<18}{'peak GiB':>9}{'plan GiB':>9}{'ratio':>7}"
             f"{'step s':>8}{'samples/s':>10}{'MFU':>7}"]
    for r in results:
        m = mfu(r)
        lines.append(f"{r['llm']:<11}{r['text_layers'] or 'all':>7} {r['row'] + ' r' + str(r['rank']):<18}"
                     f"{r['peak_bytes'] / 2**30:>9.2f}{r['est_peak_bytes'] / 2**30:>9.2f}"
                     f"{r['peak_bytes'] / r['est_peak_bytes']:>7.3f}{r['step_s']:>8.1f}"
                     f"{r['samples_per_s']:>10.3f}{'' if m is None else f'{m:.1%}':>7}")
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The one JSON line: peak/plan ratios first, then step times, samples/s, MFU."""
    out: dict[str, Any] = {}
    key = {id(r): f"{r['llm']}|{r['row'].replace(' ', '')}|r{r['rank']}" for r in results}
    for prefix, value in (("peak_over_plan", lambda r: round(r["peak_bytes"] / r["est_peak_bytes"], 4)),
                          ("step_s", lambda r: round(r["step_s"], 3)),
                          ("samples_per_s", lambda r: round(r["samples_per_s"], 4)),
                          ("mfu", lambda r: None if mfu(r) is None else round(mfu(r), 4))):
        out.update({f"{prefix}:{key[id(r)]}": value(r) for r in results})
    out["device"] = results[0]["device"] if results else None
    out["vicuna_text_layers"] = next((r["text_layers"] for r in results if r["llm"] == "vicuna-7b"), None)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llm", action="append", choices=PRESETS,
                   help="default flan-t5-xl and vicuna-7b (a toy preset checks the flow)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--rss-budget-gib", type=float, default=15.0,
                   help="CPU only: Vicuna keeps as many layers as the planner says fit this")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child), args.device, args.steps, args.budget)), flush=True)
        return {}
    results = []
    with tempfile.TemporaryDirectory(prefix="real-size-") as cache:
        for llm in args.llm or ["flan-t5-xl", "vicuna-7b"]:
            configs = [child_config(llm, peft, args.batch_size, cache, None) for peft in METHODS]
            if args.device == "cpu" and llm in FEWER_LAYERS_ON_CPU:
                layers = common_text_layers(configs, int(args.rss_budget_gib * 2**30))
                configs = [{**c, "text_layers": layers} for c in configs]
            for config in configs:
                results.append(run_child(config, args.device, args.steps, args.timeout))
                print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))
    if any(r["text_layers"] for r in results):
        print("Vicuna-7B ran at full width (4096) with fewer LLM layers: the CPU budget "
              f"({args.rss_budget_gib} GiB) cannot hold all 32 next to everything else.")
    line = summary(results)
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
