"""Model presets: real topology at toy size, offline tokenizers, image tokens, real configs."""
from __future__ import annotations

import time

import pytest
import torch

from trainables.presets import assert_image_tokens, build_model, model_config

TINY = ("tiny-t5", "tiny-llama")


@pytest.mark.parametrize("preset", TINY)
def test_tiny_builds_fast_and_has_the_real_topology(preset):
    start = time.perf_counter()
    bundle = build_model(preset)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{preset} took {elapsed:.2f}s to build"
    model, names = bundle.model, dict(bundle.model.named_modules())
    assert "vision_model.post_layernorm" in names
    layers = model.qformer.encoder.layer
    assert len(layers) == 4
    cross = [i for i in range(len(layers)) if f"qformer.encoder.layer.{i}.crossattention" in names]
    assert cross == [0, 2]  # cross-attention on every 2nd layer
    for branch in ("intermediate", "output", "intermediate_query", "output_query"):
        assert f"qformer.encoder.layer.1.{branch}.dense" in names
    assert tuple(model.query_tokens.shape) == (1, bundle.num_query_tokens, 64)
    assert model.language_projection.out_features == 64
    if bundle.family == "t5":
        assert model.config.text_config.feed_forward_proj == "gated-gelu"
        assert "language_model.decoder.block.1.layer.2.DenseReluDense.wi_1" in names
    else:
        assert "language_model.model.layers.1.mlp.gate_proj" in names
    assert model.config.image_token_id == bundle.image_token_id
    assert bundle.image_size == model.config.vision_config.image_size == 32


def test_seed_fixes_init_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_model("tiny-llama", seed=5, init="random").model.state_dict()
    assert torch.equal(torch.rand(3), expected)
    b = build_model("tiny-llama", seed=5, init="random").model.state_dict()
    c = build_model("tiny-llama", seed=6, init="random").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["query_tokens"], c["query_tokens"])


@pytest.mark.parametrize("preset", TINY)
def test_forward_backward_with_image_tokens(preset, tiny_batch):
    bundle = build_model(preset, init="random")
    batch = tiny_batch(bundle)
    assert_image_tokens(batch["input_ids"], bundle.image_token_id, bundle.num_query_tokens)
    out = bundle.model(**batch)
    # Random init: loss near ln(vocab) = ln(1024) ~ 6.9, not the ~30 of T5's untied-head init.
    assert 5.0 < out.loss.item() < 9.0
    out.loss.backward()
    assert bundle.model.query_tokens.grad.abs().sum() > 0


def test_assert_image_tokens_names_the_bad_row():
    ids = torch.tensor([[7, 7, 1], [7, 1, 1]])
    assert_image_tokens(ids[:1], 7, 2)
    with pytest.raises(ValueError, match=r"rows \[1\] hold \[1\] image tokens.*num_query_tokens=2"):
        assert_image_tokens(ids, 7, 2)


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_shipped_tokenizers_cover_any_text(family):
    bundle = build_model(f"tiny-{family}")
    text = "Context: Ünïcode ☃ 42°C — naïve café. Question: Which? Options: (a) red. Answer:"
    for tok in (bundle.llm_tokenizer, bundle.qformer_tokenizer):
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids
        assert text in tok.decode(ids)
    image_ids = bundle.llm_tokenizer(bundle.llm_tokenizer.image_token * 3, add_special_tokens=False)
    assert image_ids.input_ids == [bundle.image_token_id] * 3
    q_ids = bundle.qformer_tokenizer("red").input_ids
    assert q_ids[0] == bundle.qformer_tokenizer.cls_token_id
    assert q_ids[-1] == bundle.qformer_tokenizer.sep_token_id
    assert bundle.qformer_tokenizer.pad_token_id == 0 == bundle.model.config.qformer_config.pad_token_id


def test_real_scienceqa_text_has_no_unknown_tokens(shared):
    import json
    problems = json.loads((shared / "scienceqa" / "problems.json").read_text())
    tok = build_model("tiny-t5").llm_tokenizer
    for record in list(problems.values())[:100]:
        text = " ".join([record["question"], record["hint"], *record["choices"]])
        assert tok.unk_token_id not in tok(text).input_ids


@pytest.mark.parametrize("preset", ["small-t5", "small-llama"])
def test_small_presets_are_tens_of_millions(preset):
    total = sum(p.numel() for p in build_model(preset, meta=True).model.parameters())
    assert 30e6 <= total <= 60e6


@pytest.mark.parametrize(("preset", "text_layers"), [("flan-t5-xl", 24), ("vicuna-7b", 32)])
def test_real_presets_build_on_meta_offline(preset, text_layers):
    start = time.perf_counter()
    bundle = build_model(preset, meta=True)
    assert time.perf_counter() - start < 20
    assert bundle.llm_tokenizer is None and bundle.qformer_tokenizer is None
    assert all(p.device.type == "meta" for p in bundle.model.parameters())
    cfg = bundle.model.config
    assert (cfg.vision_config.hidden_size, cfg.vision_config.num_hidden_layers) == (1408, 39)
    assert (cfg.qformer_config.num_hidden_layers, cfg.qformer_config.hidden_size) == (12, 768)
    assert cfg.qformer_config.cross_attention_frequency == 2
    assert bundle.num_query_tokens == 32 and bundle.image_size == 224
    assert cfg.text_config.num_hidden_layers == text_layers
    assert model_config(preset).to_dict()["text_config"]["model_type"] == bundle.family


def test_unknown_preset_is_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown preset 'tiny-gpt'; allowed: tiny-t5, tiny-llama"):
        build_model("tiny-gpt")


def test_model_path_without_config_names_the_path(tmp_path):
    with pytest.raises(ValueError, match=rf"model_path '{tmp_path}' has no config.json"):
        build_model("flan-t5-xl", model_path=str(tmp_path))


def test_model_path_is_rejected_for_toy_presets(tmp_path):
    with pytest.raises(ValueError, match=r"only valid for the real presets.*'tiny-t5'"):
        build_model("tiny-t5", model_path=str(tmp_path))


@pytest.mark.parametrize("preset", TINY)
def test_random_toy_model_is_not_blind(preset, tiny_batch):
    """A toy ViT is random and frozen: its features must still depend on the image, and the
    learned queries must differ from each other (transformers would init both near zero)."""
    bundle = build_model(preset)
    bundle.model.eval()  # dropout would make identical queries differ by chance
    batch = tiny_batch(bundle)
    images = torch.zeros_like(batch["pixel_values"])
    images[0, 0], images[1, 2] = 2.0, 2.0  # a red and a blue image (normalised units)
    with torch.no_grad():
        feats = bundle.model.get_image_features(
            images, qformer_input_ids=batch["qformer_input_ids"],
            qformer_attention_mask=batch["qformer_attention_mask"], return_dict=True,
        ).pooler_output
    scale = feats.abs().mean()
    assert (feats[0] - feats[1]).abs().mean() > 0.01 * scale  # two images differ
    assert (feats[0, 0] - feats[0, 1]).abs().mean() > 0.05 * scale  # two queries differ


def test_shipped_tokenizers_are_reproducible_from_the_corpus(tmp_path):
    from trainables.tokenizer_build import TOKENIZER_DIR, build_all
    for name, path in build_all(tmp_path).items():
        assert (path / "tokenizer.json").read_text() == (TOKENIZER_DIR / name / "tokenizer.json").read_text()


def test_real_preset_loads_a_checkpoint_directory(tmp_path):
    """The from_pretrained path, offline: a saved toy T5 model in the Salesforce layout
    (LLM tokenizer at the top, Q-Former tokenizer in qformer_tokenizer/)."""
    toy = build_model("tiny-t5", seed=1)
    toy.model.save_pretrained(str(tmp_path))
    toy.llm_tokenizer.save_pretrained(str(tmp_path))
    toy.qformer_tokenizer.save_pretrained(str(tmp_path / "qformer_tokenizer"))
    bundle = build_model("flan-t5-xl", model_path=str(tmp_path))
    assert bundle.preset == f"path:{tmp_path}" and bundle.family == "t5"
    assert bundle.image_token_id == toy.image_token_id and bundle.num_query_tokens == 8
    assert torch.equal(bundle.model.query_tokens, toy.model.query_tokens)
    assert bundle.qformer_tokenizer("red").input_ids == toy.qformer_tokenizer("red").input_ids
    with pytest.raises(ValueError, match=r"holds a t5 LLM but preset 'vicuna-7b' is llama"):
        build_model("vicuna-7b", model_path=str(tmp_path))


@pytest.mark.parametrize("preset, total, vocab, image_id", [
    ("flan-t5-xl", 4_022_969_088, 32128, 32100),  # untied LM head: transformers 5 would tie it
    ("vicuna-7b", 7_913_726_720, 32064, 32001),   # hub config: embeddings resized to 32064 rows
])
def test_real_totals_equal_the_checkpoints(preset, total, vocab, image_id):
    model = build_model(preset, meta=True).model
    assert sum(p.numel() for p in model.parameters()) == total
    assert model.config.text_config.vocab_size == vocab and model.config.image_token_id == image_id
    lm = model.language_model
    assert lm.get_output_embeddings().weight is not lm.get_input_embeddings().weight


def test_accounting_cli_prints_the_real_total(capsys):
    from trainables.accounting import main
    main(["--llm", "flan-t5-xl"])
    assert capsys.readouterr().out.startswith("flan-t5-xl: 4,022,969,088 parameters")


def test_fewer_text_layers_keep_the_full_width():
    full, short = build_model("vicuna-7b", meta=True).model, build_model("vicuna-7b", meta=True, text_layers=2).model
    assert short.config.text_config.num_hidden_layers == 2 and len(short.language_model.model.layers) == 2
    assert short.config.text_config.hidden_size == full.config.text_config.hidden_size == 4096
    with pytest.raises(ValueError, match="text_layers only applies"):
        build_model("tiny-llama", text_layers=2)


@pytest.mark.parametrize("preset", TINY)
def test_random_init_is_deterministic_cheap_and_well_formed(preset):
    """random_init on a toy config (the real presets take the same path at full size)."""
    from transformers import InstructBlipForConditionalGeneration

    from trainables.random_init import build_random
    config = model_config(preset)
    family = "t5" if preset.endswith("t5") else "llama"
    a = build_random(config, "cpu", torch.bfloat16, seed=3, untie=family == "t5")
    b = build_random(config, "cpu", torch.bfloat16, seed=3, untie=family == "t5")
    reference = InstructBlipForConditionalGeneration(config)  # default init computes the buffers
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert pa.dtype == torch.bfloat16 and torch.equal(pa, pb), name
        if "norm" in name.lower() and name.endswith("weight"):
            assert bool((pa == 1).all()), name
        elif name.endswith("bias"):
            assert bool((pa == 0).all()), name
        elif pa.numel() > 1000:
            assert 0.015 < float(pa.float().std()) < 0.025, name
    for (name, buf), ref in zip(a.named_buffers(), reference.buffers()):
        assert torch.equal(buf.to(ref.dtype), ref), name
    if family == "t5":
        assert a.language_model.lm_head.weight is not a.language_model.shared.weight
