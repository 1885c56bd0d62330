"""Adapter-only checkpoints: only trainable tensors, reload reproduces val accuracy, peft-loadable."""
import shutil

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import InstructBlipForConditionalGeneration

from trainables.batching import stack_images
from trainables.checkpoint import load_tensors
from trainables.config import TrialConfig
from trainables.export import export_model
from trainables.loop import build_trial, evaluate, run_trial
from trainables.peft_targeting import is_lora_param
from trainables.presets import build_model
from trainables.scoring import score_candidates


def _run(tmp_path_factory, method, sublayer, rank, adapter="lora"):
    cache = tmp_path_factory.getbasetemp() / "prepared"
    cfg = TrialConfig.from_dict({"method": method, "sublayer": sublayer, "rank": rank, "llm": "tiny-t5",
                                 "benchmark": "synth-iconqa", "epochs": 2, "cache_dir": str(cache),
                                 "max_train_examples": 32, "max_eval_examples": 16, "seed": 5,
                                 "adapter": adapter})
    keep = tmp_path_factory.mktemp(method)
    reports = []

    def report(metrics, ckpt):
        reports.append(metrics)
        shutil.copytree(ckpt, keep / f"epoch-{metrics['epoch']}")

    run_trial(cfg, report=report)
    return cfg, reports, keep / f"epoch-{reports[-1]['epoch']}"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    return _run(tmp_path_factory, "both_lora", "all", 2)


def test_checkpoint_holds_only_trainable_tensors(lora_run):
    cfg, reports, ckpt = lora_run
    adapter = load_file(str(ckpt / "best" / "adapter" / "adapter_model.safetensors"))
    extra = load_file(str(ckpt / "best" / "extra.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert not any(is_lora_param(k) for k in extra)
    stored = sum(t.numel() for t in [*adapter.values(), *extra.values()])
    assert stored == reports[0]["trainable_params"]
    plain = dict(build_model("tiny-t5").model.named_parameters())
    assert set(extra) <= set(plain)
    assert not any(k.startswith(("vision_model.encoder", "language_model.")) for k in extra)
    # last + best tensors, two Adam moments (fp32) and pickling overhead: never the frozen base
    size = reports[-1]["checkpoint_mb"] * 2**20
    assert size < 6 * 4 * reports[0]["trainable_params"] + 100_000 < 4 * reports[0]["total_params"]


@pytest.mark.parametrize("adapter", ["dora", "pissa"])
def test_variant_checkpoints_hold_their_adapter_tensors_and_reload(tmp_path_factory, adapter):
    """DoRA's magnitudes go with the adapter; PiSSA's residual base is rebuilt from the seed."""
    cfg, reports, ckpt = _run(tmp_path_factory, "qformer_lora", "all", 2, adapter)
    adapter_file = load_file(str(ckpt / "best" / "adapter" / "adapter_model.safetensors"))
    extra = load_file(str(ckpt / "best" / "extra.safetensors"))
    assert sum(t.numel() for t in [*adapter_file.values(), *extra.values()]) == \
        reports[0]["trainable_params"]
    trial = build_trial(cfg)
    load_tensors(trial.model, ckpt / "best")
    assert evaluate(trial, "val")[0] == reports[-1]["best_val_acc"]


def test_reloading_into_a_fresh_model_reproduces_val_accuracy(lora_run):
    cfg, reports, ckpt = lora_run
    trial = build_trial(cfg)
    load_tensors(trial.model, ckpt / "best")
    assert evaluate(trial, "val")[0] == reports[-1]["best_val_acc"]
    assert evaluate(trial, "test")[0] == reports[-1]["test_acc"]


def test_peft_from_pretrained_loads_the_lora_part(lora_run):
    cfg, _, ckpt = lora_run
    saved = load_file(str(ckpt / "best" / "adapter" / "adapter_model.safetensors"))
    model = PeftModel.from_pretrained(build_model(cfg.llm, seed=cfg.seed).model, str(ckpt / "best" / "adapter"))
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(saved)
    for key, tensor in saved.items():
        name = key.replace(".weight", ".default.weight")
        assert torch.equal(loaded[name], tensor), key
    assert any(t.abs().sum() > 0 for k, t in saved.items() if "lora_B" in k)  # it trained


def test_export_merges_adapters_and_scores_like_the_unmerged_model(lora_run, tmp_path):
    cfg, _, ckpt = lora_run
    out = export_model(ckpt, tmp_path / "model")
    merged = InstructBlipForConditionalGeneration.from_pretrained(str(out))
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    trial = build_trial(cfg)
    load_tensors(trial.model, ckpt / "best")
    problems = trial.splits["val"][:8]
    pixels = trial.transform(stack_images(problems), train=False)
    # the trial's model reads cached ViT features (its trunk is released); the export needs pixels
    want = score_candidates(trial.model, problems, trial.vision.eval_inputs(problems), trial.spec,
                            trial.precision)
    got = score_candidates(merged, problems, pixels, trial.spec, trial.precision)
    assert got.predictions == want.predictions
    for a, b in zip(got.scores, want.scores):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-3)


def test_baseline_checkpoint_has_no_adapter_and_reloads(tmp_path_factory):
    cfg, reports, ckpt = _run(tmp_path_factory, "baseline", "none", 0)
    assert not (ckpt / "best" / "adapter").exists()
    extra = load_file(str(ckpt / "best" / "extra.safetensors"))
    assert sum(t.numel() for t in extra.values()) == reports[0]["trainable_params"]
    trial = build_trial(cfg)
    load_tensors(trial.model, ckpt / "best")
    assert evaluate(trial, "val")[0] == reports[-1]["best_val_acc"]
