"""benchmarks.real_size_step and benchmarks.gpu_check, shape and flow on CPU with a toy preset
(their real-size figures come from running them: CPU for the first, one GPU for the second)."""
from __future__ import annotations

import pytest
import torch

from benchmarks import gpu_check, real_size_step
from trainables.methods import PeftSetup


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    config = real_size_step.child_config("tiny-t5", PeftSetup("both_lora", "all", 8), 2,
                                         str(tmp_path_factory.mktemp("prep")), None, "auto")
    return real_size_step.measure(config, "cpu", steps=2)


def test_a_measurement_has_peak_plan_speed_and_flops(measured):
    r = measured
    assert r["batch"] == 2 and len(r["losses"]) == 2 and all(loss > 0 for loss in r["losses"])
    # (the ratio means something only in a fresh process, as the benchmark runs it: pytest's RSS
    # high-water mark already holds earlier tests)
    assert r["peak_bytes"] > 0 and r["est_peak_bytes"] > 0
    assert r["step_s"] > 0 and r["samples_per_s"] == pytest.approx(2 / r["step_s"])
    assert r["flops_per_step"] > 0 and r["gpu_name"] is None and real_size_step.mfu(r) is None


def test_the_json_line_puts_ratios_first(measured):
    line = real_size_step.summary([measured])
    keys = list(line)
    assert keys[0] == "peak_over_plan:tiny-t5|both_lora/all|r8"
    assert line["step_s:tiny-t5|both_lora/all|r8"] > 0 and line["device"] == "cpu"
    assert "ratio" in real_size_step.table([measured]).splitlines()[0]


def test_mfu_uses_the_devices_bf16_peak(measured):
    on_gpu = {**measured, "gpu_name": "NVIDIA H200", "flops_per_step": 989e12, "step_s": 2.0}
    assert real_size_step.mfu(on_gpu) == pytest.approx(0.5)


def test_vicuna_keeps_full_width_and_as_many_layers_as_the_budget_allows(tmp_path):
    config = real_size_step.child_config("vicuna-7b", PeftSetup("both_lora", "all", 8), 2,
                                         str(tmp_path / "prep"), None)
    assert real_size_step.max_text_layers(config, 200 * 2**30) is None  # all 32 fit
    layers = real_size_step.max_text_layers(config, 12 * 2**30)
    assert layers is not None and 4 <= layers < 32
    # every method runs at one depth, the deepest all fit (baseline's trained Q-Former costs more)
    baseline = {**config, "method": "baseline", "sublayer": "none", "rank": 0}
    common = real_size_step.common_text_layers([baseline, config], 12 * 2**30)
    assert common == min(real_size_step.max_text_layers(baseline, 12 * 2**30), layers)


def test_gpu_check_scoring_speedup_flow_on_cpu(tmp_path):
    config = real_size_step.child_config("tiny-llama", PeftSetup("both_lora", "all", 8), 4,
                                         str(tmp_path / "prep"), None, "auto")
    s = gpu_check.scoring_speedup(config, "cpu")
    assert s["same_predictions"] and s["speedup"] > 0 and s["candidates"] >= gpu_check.SCORING_PROBLEMS * 2


def test_gpu_check_line_and_refusal_without_cuda(measured, capsys):
    line = gpu_check.summary({"steps": [measured], "scoring": [{"llm": "tiny-t5", "speedup": 3.0}],
                              "skipped": ["vicuna-7b scoring"], "wall_s": 12.0})
    assert list(line)[:2] == ["peak_over_plan:tiny-t5|both_lora/all|r8", "scoring_speedup:tiny-t5"]
    assert line["setting:tiny-t5|both_lora/all|r8"].startswith("2x8") and line["skipped"] == ["vicuna-7b scoring"]
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            gpu_check.main(["--device", "cuda"])
        assert "no CUDA device here" in capsys.readouterr().err


def test_cuda_peak_adds_what_the_device_holds_outside_the_allocator(monkeypatch):
    """The GPU path of the measurement, with torch.cuda mocked: reserved peak + (used - reserved
    now), i.e. what nvidia-smi shows (CUDA context, cuBLAS workspace), which the plan counts."""
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda d: 30 * gib)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 20 * gib)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (59 * gib, 80 * gib))  # 21 GiB used
    assert real_size_step.device_peak_bytes(torch.device("cuda:0")) == 31 * gib


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu_with_a_toy_preset(capsys):
    """The prepared GPU command's whole flow (child processes, fitting, scoring speedup, the
    JSON line) on CPU, so that a GPU session spends its minutes measuring, not debugging."""
    line = gpu_check.main(["--device", "cpu", "--llm", "tiny-t5", "--steps", "1"])
    assert list(line)[:3] == ["peak_over_plan:tiny-t5|baseline/none|r0",
                              "peak_over_plan:tiny-t5|both_lora/all|r8", "scoring_speedup:tiny-t5"]
    assert all(0.5 < line[k] < 1.5 for k in list(line)[:2]) and line["scoring_speedup:tiny-t5"] > 0
    assert line["skipped"] == [] and line["device"] == "cpu"
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith('{"peak_over_plan:')
