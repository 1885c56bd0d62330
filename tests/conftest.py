"""Shared test fixtures: one CPU thread (the machine is shared), a tiny-model batch builder, and
the real data sample beside the checkout."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch

SHARED_DATA_ENV = "INSTRUCTBLIP_SHARED_DATA"
"""Overrides where the real data sample lies (default: ../shared/data beside the checkout)."""


def shared_data_dir() -> Path:
    """The real data sample: $INSTRUCTBLIP_SHARED_DATA, else shared/data beside the checkout.
    Tests that need it skip when it is absent; none hard-codes a machine's path."""
    env = os.environ.get(SHARED_DATA_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared() -> Path:
    """The real data sample (skips the test when it is absent)."""
    root = shared_data_dir()
    if not (root / "scienceqa" / "problems.json").is_file():
        pytest.skip(f"real data sample not present at {root} (set {SHARED_DATA_ENV})")
    return root


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests run side by side with other work on 2 cores; one thread keeps timings stable."""
    torch.set_num_threads(1)


def make_batch(bundle, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A small valid training batch for a toy ModelBundle (image tokens first, as in the prompts).

    T5 gets ``labels`` for the decoder; LLaMA gets the prompt itself as labels (causal LM).
    """
    gen = torch.Generator().manual_seed(seed)
    tok, qtok = bundle.llm_tokenizer, bundle.qformer_tokenizer
    prompts = [tok.image_token * bundle.num_query_tokens + f" Question: Which colour is shape {i}?"
               " Options: (a) red (b) blue. Answer:" for i in range(batch_size)]
    enc = tok(prompts, return_tensors="pt", padding=True)
    qenc = qtok([f"Which colour is shape {i}?" for i in range(batch_size)],
                return_tensors="pt", padding=True)
    size = bundle.image_size
    batch = {
        "pixel_values": torch.randn(batch_size, 3, size, size, generator=gen),
        "qformer_input_ids": qenc.input_ids, "qformer_attention_mask": qenc.attention_mask,
        "input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
    }
    if bundle.family == "t5":
        batch["labels"] = tok(["(a) red"] * batch_size, return_tensors="pt").input_ids
    else:
        labels = enc.input_ids.clone()
        labels[enc.attention_mask == 0] = -100
        batch["labels"] = labels
    return batch


@pytest.fixture
def tiny_batch():
    """Factory fixture: ``tiny_batch(bundle, batch_size=2)`` -> model inputs with labels."""
    return make_batch


@pytest.fixture(autouse=True)
def no_leaked_ray_or_sigint_handler():
    """The suite runs in one process: a test that starts Ray in-process (a driver run, Tune) and
    does not shut it down makes the next test's ray.init fail ("called ray.init twice"), and
    Tune leaves its own SIGINT handler installed. Both are put back after each test; a Ray a
    module-scoped fixture started before the test is left to that fixture."""
    handler = signal.getsignal(signal.SIGINT)
    ray = sys.modules.get("ray")
    ray_before = bool(ray and ray.is_initialized())
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized() and not ray_before:
        ray.shutdown()
    if signal.getsignal(signal.SIGINT) is not handler:
        signal.signal(signal.SIGINT, handler)
