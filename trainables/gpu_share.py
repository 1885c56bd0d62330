"""A trial's GPU share inside its process: cap the CUDA memory to it, give it all back at the end.

Why: several trials share one GPU when their planned peaks fit (orchestrator.placement.packing). Two
things keep that safe:

- cap: each trial process limits PyTorch's caching allocator to the share Ray reserved for it
  (``torch.cuda.set_per_process_memory_fraction``), minus the CUDA context
  (trainables.memory.CUDA_CONTEXT_BYTES, part of every planned peak) -- the context
  lives outside the allocator, so caps plus contexts of all trials on a GPU stay within the
  shares, which sum to <= 1. A trial that outgrows its plan gets an OutOfMemoryError in its
  own process (Tune retries or fails that trial); its neighbours keep their memory.
- release: with ``reuse_actors`` the process outlives the trial (ray #23971: a stopped trial's
  model stayed on the GPU). When a trial ends -- finished, failed, or stopped by the scheduler
  (Ray stops a function trainable by raising SystemExit inside ``tune.report``) -- the frames
  of its traceback are cleared (they hold the model), garbage is collected and the allocator's
  cache is emptied, so the GPU memory is back for the next trial on that GPU.
"""
from __future__ import annotations

import contextlib
import gc
import traceback
from collections.abc import Iterator

import torch

from trainables.memory import CUDA_CONTEXT_BYTES

MIN_FRACTION = 0.02
"""Never cap below this fraction (a share smaller than the context would otherwise go <= 0)."""


def assigned_gpu_share() -> float:
    """The GPU share Ray reserved for this trial (0 outside Ray or without GPUs)."""
    try:
        import ray
        if not ray.is_initialized():
            return 0.0
        return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
    except Exception:  # not in a Ray worker: nothing was reserved
        return 0.0


def memory_fraction(share: float, total_bytes: int) -> float | None:
    """The allocator cap for a GPU share (None: a whole GPU or more, no cap)."""
    if share <= 0 or share >= 1:
        return None
    return max(MIN_FRACTION, share - CUDA_CONTEXT_BYTES / total_bytes)


def cap_cuda_memory(device: torch.device, share: float) -> float | None:
    """Limit this process's CUDA allocator to its share of ``device``; the fraction set, or None
    (a CPU trial, or a whole GPU). Set again for every trial: a reused actor may change share."""
    if device.type != "cuda":
        return None
    fraction = memory_fraction(share, torch.cuda.get_device_properties(device).total_memory)
    torch.cuda.set_per_process_memory_fraction(1.0 if fraction is None else fraction, device)
    return fraction


def release_cuda_memory() -> None:
    """Free what a finished trial left: unreachable tensors, then the allocator's cached blocks."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def gpu_share_scope(device: torch.device, share: float) -> Iterator[float | None]:
    """Run one trial inside its GPU share: capped on entry, released however it ends."""
    try:
        yield cap_cuda_memory(device, share)
    except BaseException as err:
        # The traceback keeps every frame of the trial -- and so its model -- alive for as long
        # as Ray holds the exception; drop the frames' locals (the text of the trace stays).
        traceback.clear_frames(err.__traceback__)
        raise
    finally:
        release_cuda_memory()
