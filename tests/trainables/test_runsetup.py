"""Device from Ray: a trial uses only the GPU(s) Ray assigned it, and one that reserved none
never touches CUDA (Ray 2.60 leaves the GPUs visible to it); CUDA_VISIBLE_DEVICES is mocked."""
from __future__ import annotations

import pytest
import torch

from trainables import runsetup, tune_fn


@pytest.mark.parametrize("gpu_ids, visible, device", [
    ([], "0,1", "cpu"),            # reserved no GPU: CPU although two are visible
    ([], None, "cpu"),
    ([1], "1", "cuda:0"),          # Ray narrowed CUDA_VISIBLE_DEVICES to the assigned GPU
    (["3"], "2,3", "cuda:1"),      # two assigned, the first used; ids arrive as str or int
    ([0], None, "cuda:0"),         # no CUDA_VISIBLE_DEVICES: physical index
])
def test_device_is_the_gpu_ray_assigned(gpu_ids, visible, device):
    assert runsetup.device_for(gpu_ids, visible) == device


def test_an_assigned_gpu_hidden_by_cuda_visible_devices_is_an_error():
    with pytest.raises(RuntimeError, match="does not include it"):
        runsetup.device_for([5], "0,1")


class _Context:
    def __init__(self, gpus):
        self.gpus = gpus

    def get_assigned_resources(self):
        return {"CPU": 1.0, "GPU": self.gpus}


def test_a_fractional_gpu_share_is_the_memory_budget(monkeypatch):
    import ray
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [2])
    monkeypatch.setattr(ray, "get_runtime_context", lambda: _Context(0.25))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    seen = {}
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.setdefault("set", str(d)))
    props = type("P", (), {"total_memory": 80 * 2**30})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: props)
    device, budget = tune_fn.assigned_device()
    assert str(device) == "cuda:0" and seen["set"] == "cuda:0" and budget == 20 * 2**30


def test_a_trial_without_a_gpu_never_initialises_cuda(tmp_path, monkeypatch):
    """CUDA looks available (as on a GPU node where Ray gave this trial none); any CUDA
    initialisation or allocation fails the test. The old "cuda if available" rule took cuda."""
    import ray
    from ray import tune

    def touched(*args, **kwargs):
        raise AssertionError("a trial without a reserved GPU initialised CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "_lazy_init", touched)
    monkeypatch.setattr(torch.cuda, "set_device", touched)
    monkeypatch.setattr(torch.cuda, "get_device_properties", touched)
    monkeypatch.setattr(ray, "get_gpu_ids", list)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    reports = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    tune_fn.train_trial({"method": "qformer_lora", "sublayer": "ffn", "rank": 1, "llm": "tiny-t5",
                         "benchmark": "synth-iconqa", "epochs": 1, "max_train_examples": 16,
                         "max_eval_examples": 4, "cache_dir": str(tmp_path / "prep")})
    assert reports and reports[-1]["done"]
    assert reports[0]["peak_memory_gib"] > 0  # measured as this process's RSS: it ran on CPU
