"""A trial's GPU share: the allocator cap, and the release of a stopped/failed/finished trial.

On CPU the release path is checked through the real trial code with Ray's session calls
replaced (Ray stops a function trainable by raising SystemExit inside tune.report); the CUDA
calls are recorded. The `gpu` tests do the same on a real GPU.
"""
from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import pytest
import torch

from trainables import gpu_share, loop, tune_fn
from trainables.gpu_share import MIN_FRACTION, memory_fraction
from trainables.memory import CUDA_CONTEXT_BYTES

GIB = 2**30
CONFIG = {"method": "both_lora", "rank": 2, "llm": "tiny-t5", "benchmark": "synth-iconqa",
          "epochs": 3, "max_train_examples": 16, "max_eval_examples": 8, "seed": 3}


def test_memory_fraction_leaves_room_for_the_cuda_context():
    assert memory_fraction(0.25, 80 * GIB) == pytest.approx(0.25 - CUDA_CONTEXT_BYTES / (80 * GIB))
    assert memory_fraction(1.0, 80 * GIB) is None and memory_fraction(0.0, 80 * GIB) is None
    assert memory_fraction(0.01, 24 * GIB) == MIN_FRACTION


@pytest.fixture
def fake_cuda(monkeypatch):
    """gpu_share sees an 80 GiB GPU whose calls are recorded; Ray says this trial holds 0.25 of
    it. The trial itself trains on CPU (only gpu_share's view of torch is replaced)."""
    calls: dict[str, list] = {"fraction": [], "empty_cache": []}
    cuda = SimpleNamespace(
        is_available=lambda: True, is_initialized=lambda: True,
        get_device_properties=lambda device: SimpleNamespace(total_memory=80 * GIB),
        set_per_process_memory_fraction=lambda f, device: calls["fraction"].append((f, device)),
        empty_cache=lambda: calls["empty_cache"].append(True))
    monkeypatch.setattr(gpu_share, "torch", SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(tune_fn, "assigned_gpu_share", lambda: 0.25)
    gpu = torch.device("cuda", 0)  # what the scope is told; the trial's own device stays the CPU
    monkeypatch.setattr(tune_fn, "gpu_share_scope",
                        lambda device, share: gpu_share.gpu_share_scope(gpu, share))
    return calls


@pytest.fixture
def model_ref(monkeypatch):
    """A weak reference to the model the trial builds (set once it is built)."""
    refs: list[weakref.ref] = []
    real_apply = loop.apply_method

    def recording_apply(*args, **kwargs):
        model = real_apply(*args, **kwargs)
        refs.append(weakref.ref(model))
        return model

    monkeypatch.setattr(loop, "apply_method", recording_apply)
    return refs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> str:
    """One prepared synth benchmark for the module's trials (preparing it is most of a trial)."""
    return str(tmp_path_factory.mktemp("prep"))


def _run(monkeypatch, cache_dir, report) -> None:
    from ray import tune
    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    tune_fn.train_trial({**CONFIG, "cache_dir": cache_dir})


def test_a_trial_stopped_by_the_scheduler_leaves_no_model_behind(monkeypatch, prepared, fake_cuda,
                                                                 model_ref):
    def stop_after_first_epoch(metrics, checkpoint=None):
        raise SystemExit(0)  # what Ray's session does when Tune stops (or reuses) the trial

    with pytest.raises(SystemExit) as stopped:
        _run(monkeypatch, prepared, stop_after_first_epoch)
    gc.collect()
    # The exception (and its traceback) is still held -- as Ray's runner thread holds it --
    # yet the model is gone and the allocator cache was emptied.
    assert stopped.value is not None and model_ref and model_ref[0]() is None
    assert fake_cuda["empty_cache"]
    fraction, device = fake_cuda["fraction"][0]
    assert device == torch.device("cuda", 0) and fraction == pytest.approx(0.25 - CUDA_CONTEXT_BYTES / (80 * GIB))


def test_a_failed_trial_leaves_no_model_behind(monkeypatch, prepared, fake_cuda, model_ref):
    def broken_report(metrics, checkpoint=None):
        raise RuntimeError("storage went away")

    with pytest.raises(RuntimeError, match="storage went away") as failed:
        _run(monkeypatch, prepared, broken_report)
    gc.collect()
    assert failed.traceback and model_ref[0]() is None and fake_cuda["empty_cache"]


def test_a_finished_trial_releases_its_memory(monkeypatch, prepared, fake_cuda, model_ref):
    reports = []
    _run(monkeypatch, prepared, lambda metrics, checkpoint=None: reports.append(metrics))
    assert reports[-1]["done"] and model_ref[0]() is None and fake_cuda["empty_cache"]


def test_no_cap_outside_ray_or_on_cpu():
    assert gpu_share.assigned_gpu_share() == 0.0  # no Ray session in this process
    assert gpu_share.cap_cuda_memory(torch.device("cpu"), 0.5) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cap_and_release_on_a_real_gpu():
    """A capped process cannot take more than its share; a stopped trial's memory comes back."""
    total = torch.cuda.get_device_properties(0).total_memory
    before = torch.cuda.memory_reserved(0)
    with pytest.raises(SystemExit):
        with gpu_share.gpu_share_scope(torch.device("cuda", 0), 0.25):
            held = torch.empty(int(0.1 * total), dtype=torch.uint8, device="cuda")
            assert torch.cuda.memory_reserved(0) >= held.numel()
            with pytest.raises(torch.OutOfMemoryError):
                torch.empty(int(0.3 * total), dtype=torch.uint8, device="cuda")
            raise SystemExit(0)
    assert torch.cuda.memory_reserved(0) <= before
    torch.cuda.set_per_process_memory_fraction(1.0, 0)
