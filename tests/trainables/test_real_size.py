"""Real size on CPU, random bf16 weights, the project's own trial path (slow; runs in CI).

Each model runs in a child process (tests/trainables/real_size_child.py) so that its peak RSS is
its own: build (full-size architecture, deterministic random bf16 weights, stand-in
tokenizers; nothing downloaded), both_lora r8, two optimizer steps on two sample-iconqa problems
(micro-batch 1), validation and test scoring of two problems each, the adapter checkpoint
written by the trial and reloaded into the model. Peak RSS must be within 20% of the planner's
estimate for exactly that configuration (orchestrator.driver.plan.memory_estimate).

Vicuna-7B keeps its full width (4096, 32 heads, FFN 11008, vocabulary 32064) but 16 of its 32
layers: all 32 are 13 GB of bf16 weights on top of 2.6 GB for the ViT/Q-Former/embeddings, more
than the ~14 GB one test may take on the 24 GB CI machine. Flan-T5-XL runs at full depth.
On a shared machine run it alone (e.g. under a lock held by every heavy job: ``flock LOCKFILE pytest -m slow ...``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RSS_LIMIT = 14 * 10**9


@pytest.mark.slow
@pytest.mark.parametrize("llm, text_layers", [("flan-t5-xl", None), ("vicuna-7b", 16)])
def test_real_size_trial_fits_the_plan(llm, text_layers, tmp_path):
    config = {"method": "both_lora", "sublayer": "all", "rank": 8, "llm": llm, "random_weights": True,
              "text_layers": text_layers, "benchmark": "sample-iconqa", "cache_dir": str(tmp_path / "prep"),
              "max_train_examples": 2, "max_eval_examples": 2, "epochs": 1, "batch_size": 1,
              "grad_accum": 1, "eval_batch_size": 2, "vit_cache": False, "num_threads": 2}
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, "-m", "tests.trainables.real_size_child", json.dumps(config)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    first, last = r["reports"][0], r["reports"][-1]
    # the trial path ran: 2 optimizer steps of 1 problem, validation, test, a checkpoint
    assert last["done"] and not last["diverged"] and last["epoch"] == 1
    assert (first["micro_batch_size"], first["grad_accum_steps"]) == (1, 1)
    assert 0.0 <= last["test_acc"] <= 1.0 and last["checkpoint_mb"] > 0
    expected_total = 4_022_969_088 if text_layers is None else None
    if expected_total:
        assert first["total_params"] - first["lora_params_qformer"] - first["lora_params_llm"] == expected_total
    # frozen in bf16, trainable fp32 masters; the adapter checkpoint round-trips exactly
    assert r["frozen_dtypes"] == ["torch.bfloat16"] and r["trainable_dtypes"] == ["torch.float32"]
    assert r["lora_tensors"] > 0 and r["adapter_files"] and r["reload_equal"]
    # peak RSS within 20% of the planner's estimate for this configuration
    planned = r["estimate"]["peak_bytes"]
    assert first["est_peak_memory_gib"] * 2**30 == pytest.approx(planned, rel=1e-6)  # trial = planner
    ratio = r["peak_rss_bytes"] / planned
    print(f"{llm}: peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB, planned {planned / 2**30:.2f} GiB, "
          f"ratio {ratio:.3f}, build {r['build_s']:.0f} s, total {r['total_s']:.0f} s")
    assert 0.8 <= ratio <= 1.2
    assert r["peak_rss_bytes"] < RSS_LIMIT
