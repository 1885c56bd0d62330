"""Model presets: build an InstructBLIP model plus its two tokenizers from a preset name.

Why: every trial, test and benchmark needs "the model" without caring whether it is a toy that
builds offline in milliseconds or a real Salesforce checkpoint. All presets share the real
topology (ViT with post_layernorm -> Q-Former with cross-attention every 2nd layer, both FFN
branches and learned query tokens -> language_projection -> Flan-T5-style gated-GELU
encoder-decoder or LLaMA decoder), so LoRA targeting and parameter accounting are identical
code paths for all of them.

- tiny-t5 / tiny-llama: shipped tokenizers, sized for the 2-core grid; by default the shipped
  pretrained weights (trainables.pretrained, built by trainables.pretrain), so that fine-tuning
  adapts a model that can see and answer, as the paper's does; ``init="random"`` gives the
  seeded random init instead.
- small-t5 / small-llama: random init from a seed, shipped tokenizers, tens of millions of
  parameters, for benchmarks; xlsplit-t5: sized so that its ViT : Q-Former : LLM FLOP split
  per problem is Flan-T5-XL's (benchmarks.vit_cache).
- flan-t5-xl / vicuna-7b: ``from_pretrained`` from the HF cache or ``model_path``; with
  ``meta=True`` built from the offline config on the meta device (no weights, no tokenizers);
  with ``random_weights=True`` built at full size from the offline config with cheap
  deterministic random weights and the stand-in tokenizers (trainables.standin_tokenizers),
  nothing downloaded: the real-size path (batching, step, scoring, checkpoints) without a
  checkpoint, for memory/speed checks (trainables.random_init).

Dtypes: ``dtype`` is the dtype the weights are stored in. A trial stores the frozen parts in
its ``weight_dtype`` (bf16 for the real presets) and then upcasts what trains to fp32 masters
(trainables.step.upcast_trainables).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    PreTrainedTokenizerBase,
)

from trainables.defaults import default_init
from trainables.families import family_for_model_type
from trainables.pretrained import INITS, SHIPPED_PRESETS, load_shipped
from trainables.real_configs import HF_REPO_IDS, QFORMER, REAL_CONFIGS, VISION
from trainables.vocab import PRESET_FAMILY, PRESETS, REAL_PRESETS, check_choice

WEIGHT_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16,
                                         "fp32": torch.float32}
"""Names of the dtypes frozen weights may be stored in (TrialConfig.weight_dtype)."""

TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "tokenizers"
# CLIP normalisation, used by InstructBLIP's image processor (paper appendix B).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TINY_VOCAB = 1024
"""Vocabulary size of the shipped tokenizers (assets/tokenizers/*), fixed by tokenizer_build."""


@dataclass(frozen=True)
class ModelBundle:
    """A model and everything needed to feed it."""

    model: InstructBlipForConditionalGeneration
    """The InstructBLIP model (not yet peft-wrapped)."""
    preset: str
    """Preset name, or ``"path:<dir>"`` when loaded from a directory."""
    family: str
    """LLM family: ``"t5"`` or ``"llama"`` (decides LoRA target names)."""
    qformer_tokenizer: PreTrainedTokenizerBase | None
    """BERT-style tokenizer of the Q-Former's instruction input; None for meta builds."""
    llm_tokenizer: PreTrainedTokenizerBase | None
    """LLM tokenizer holding the image token; None for meta builds."""
    image_size: int
    """Square input resolution of the ViT."""
    image_mean: tuple[float, float, float]
    """Per-channel normalisation mean (CLIP)."""
    image_std: tuple[float, float, float]
    """Per-channel normalisation std (CLIP)."""
    num_query_tokens: int
    """Learned queries = image tokens each LLM prompt must contain."""
    image_token_id: int
    """``model.config.image_token_id``: the placeholder the Q-Former outputs replace."""


# Toy sizes. tiny: the 132-trial grid must run in ~20 min on 2 cores; small: 30-60M params;
# xlsplit: a CPU-sized model spending its work like Flan-T5-XL does (benchmarks.vit_cache).
_TOY_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"image": 32, "patch": 8, "vit": 48, "vit_ff": 96, "vit_layers": 2, "vit_heads": 4,
             "qf": 64, "qf_ff": 128, "qf_layers": 4, "qf_heads": 4, "queries": 8,
             "llm": 64, "llm_ff": 128, "llm_layers": 2, "llm_heads": 4},
    "small": {"image": 64, "patch": 8, "vit": 256, "vit_ff": 1024, "vit_layers": 4,
              "vit_heads": 4, "qf": 384, "qf_ff": 1536, "qf_layers": 6, "qf_heads": 6,
              "queries": 16, "llm": 384, "llm_ff": 1024, "llm_layers": 4, "llm_heads": 6},
    # Flan-T5-XL's per-problem FLOP split (ViT : Q-Former : LLM, training and scoring, measured
    # by benchmarks.flop_split) at CPU size: 257 ViT tokens and 32 queries as the real model.
    "xlsplit": {"image": 64, "patch": 4, "vit": 176, "vit_ff": 768, "vit_layers": 13, "vit_heads": 4,
                "qf": 96, "qf_ff": 320, "qf_layers": 3, "qf_heads": 4, "queries": 32,
                "llm": 256, "llm_ff": 640, "llm_layers": 8, "llm_dec_layers": 12, "llm_heads": 4},
}


def _toy_text_config(family: str, s: dict[str, int], llm_tok: PreTrainedTokenizerBase) -> dict[str, Any]:
    """Flan-T5-style (gated-GELU, untied head) or LLaMA text config at toy size."""
    if family == "t5":
        return {
            "model_type": "t5", "vocab_size": len(llm_tok), "d_model": s["llm"],
            "d_kv": s["llm"] // s["llm_heads"], "d_ff": s["llm_ff"], "num_layers": s["llm_layers"],
            "num_decoder_layers": s.get("llm_dec_layers", s["llm_layers"]), "num_heads": s["llm_heads"],
            "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
            "pad_token_id": llm_tok.pad_token_id, "eos_token_id": llm_tok.eos_token_id,
            "decoder_start_token_id": llm_tok.pad_token_id,
        }
    return {
        "model_type": "llama", "vocab_size": len(llm_tok), "hidden_size": s["llm"],
        "intermediate_size": s["llm_ff"], "num_hidden_layers": s["llm_layers"],
        "num_attention_heads": s["llm_heads"], "num_key_value_heads": s["llm_heads"],
        "max_position_embeddings": 1024, "tie_word_embeddings": False,
        "pad_token_id": llm_tok.pad_token_id, "bos_token_id": llm_tok.bos_token_id,
        "eos_token_id": llm_tok.eos_token_id,
    }


def load_toy_tokenizers(family: str) -> tuple[PreTrainedTokenizerBase, PreTrainedTokenizerBase]:
    """The shipped (Q-Former, LLM) tokenizers of a toy preset; offline, from package data."""
    qformer_tok = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR / "qformer"))
    llm_tok = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR / family))
    return qformer_tok, llm_tok


def _toy_config(preset: str, llm_tok: PreTrainedTokenizerBase) -> InstructBlipConfig:
    s = _TOY_SIZES[preset.split("-")[0]]
    vision = {"hidden_size": s["vit"], "intermediate_size": s["vit_ff"],
              "num_hidden_layers": s["vit_layers"], "num_attention_heads": s["vit_heads"],
              "image_size": s["image"], "patch_size": s["patch"], "layer_norm_eps": 1e-6,
              "qkv_bias": True,
              # transformers' ViT default (1e-10) gives ~zero weights: harmless when a trained
              # checkpoint is loaded, but a toy ViT is random AND frozen, so its features would
              # be constant and the model blind. BERT's 0.02 gives informative random features.
              "initializer_range": 0.02}
    qformer = {**QFORMER, "vocab_size": TINY_VOCAB, "hidden_size": s["qf"],
               "intermediate_size": s["qf_ff"], "num_hidden_layers": s["qf_layers"],
               "num_attention_heads": s["qf_heads"], "encoder_hidden_size": s["vit"]}
    return InstructBlipConfig(
        vision_config=vision, qformer_config=qformer,
        text_config=_toy_text_config(PRESET_FAMILY[preset], s, llm_tok),
        num_query_tokens=s["queries"], image_token_index=llm_tok.image_token_id,
    )


def model_config(preset: str) -> InstructBlipConfig:
    """Offline InstructBLIP config of a preset (published values for the real ones)."""
    check_choice("preset", preset, PRESETS)
    if preset in REAL_PRESETS:
        text, image_token_id, queries = REAL_CONFIGS[preset]
        return InstructBlipConfig(
            vision_config=dict(VISION), qformer_config=dict(QFORMER), text_config=dict(text),
            num_query_tokens=queries, image_token_index=image_token_id,
        )
    return _toy_config(preset, load_toy_tokenizers(PRESET_FAMILY[preset])[1])


def real_config(preset: str, text_layers: int | None = None) -> InstructBlipConfig:
    """The offline config of a real preset, optionally with ``text_layers`` LLM layers
    (T5: encoder and decoder each)."""
    config = model_config(preset)
    if text_layers is not None:
        text = config.text_config
        for name in ("num_layers", "num_decoder_layers", "num_hidden_layers"):
            if getattr(text, name, None) is not None:
                setattr(text, name, text_layers)
    return config


def _check_build_args(preset: str, model_path: str | None, meta: bool, random_weights: bool,
                      text_layers: int | None) -> None:
    if model_path is not None and preset not in REAL_PRESETS:
        raise ValueError(f"model_path is only valid for the real presets "
                         f"({', '.join(REAL_PRESETS)}), not {preset!r}")
    if random_weights and (preset not in REAL_PRESETS or model_path is not None or meta):
        raise ValueError(f"random_weights builds a real preset's architecture without a checkpoint: "
                         f"it needs a real preset ({', '.join(REAL_PRESETS)}), no model_path and "
                         f"not meta; got {preset!r}")
    if text_layers is not None and not (preset in REAL_PRESETS and (meta or random_weights)):
        raise ValueError("text_layers only applies to meta or random_weights builds of a real preset")
    if text_layers is not None and text_layers < 1:
        raise ValueError(f"text_layers must be >= 1, got {text_layers}")


def _check_init(preset: str, init: str | None, no_checkpoint: bool) -> str:
    """The resolved init; "pretrained" needs shipped weights (tiny) or a checkpoint (real)."""
    init = default_init(preset) if init is None else check_choice("init", init, INITS)
    if init == "pretrained" and preset not in SHIPPED_PRESETS + REAL_PRESETS:
        raise ValueError(f"no pretrained weights ship for preset {preset!r} "
                         f"(only {', '.join(SHIPPED_PRESETS)}); use init='random'")
    if init == "random" and preset in REAL_PRESETS and not no_checkpoint:
        raise ValueError(f"init='random' does not apply to the real preset {preset!r}: it loads "
                         "its checkpoint; random_weights=True builds it with random weights")
    return init


def _bundle(model, preset: str, family: str, qtok, ltok) -> ModelBundle:
    cfg = model.config
    return ModelBundle(
        model=model, preset=preset, family=family, qformer_tokenizer=qtok, llm_tokenizer=ltok,
        image_size=cfg.vision_config.image_size, image_mean=CLIP_MEAN, image_std=CLIP_STD,
        num_query_tokens=cfg.num_query_tokens, image_token_id=cfg.image_token_id,
    )


def _family_of(config: InstructBlipConfig, source: str) -> str:
    return family_for_model_type(config.text_config.model_type, source).name


def untie_lm_head(model: InstructBlipForConditionalGeneration) -> None:
    """Give a T5 LLM its own LM head, as the real Flan-T5-XL checkpoint has (untied, 65.8 M
    parameters). transformers 5's T5Config forces ``tie_word_embeddings=True``; loading the real
    checkpoint unties by itself (two different tensors), an offline build must do it here.
    The new head lives on the embeddings' device and dtype, uninitialised."""
    lm = model.language_model
    if lm.lm_head.weight is not lm.shared.weight:
        return
    lm.lm_head.weight = torch.nn.Parameter(torch.empty_like(lm.shared.weight))
    for owner, prefix in ((model, "language_model."), (lm, "")):
        getattr(owner, "all_tied_weights_keys", {}).pop(f"{prefix}lm_head.weight", None)


def _load_real(preset: str, model_path: str | None, device: str, dtype: torch.dtype) -> ModelBundle:
    """from_pretrained from ``model_path`` (a local dir) or the HF cache / hub id of the preset."""
    if model_path is not None:
        if not (Path(model_path) / "config.json").is_file():
            raise ValueError(f"model_path {str(model_path)!r} has no config.json; expected an "
                             "InstructBLIP checkpoint directory (save_pretrained layout)")
        source, name = str(model_path), f"path:{model_path}"
    else:
        source, name = HF_REPO_IDS[preset], preset
    model = InstructBlipForConditionalGeneration.from_pretrained(source, dtype=dtype).to(device)
    family = _family_of(model.config, source)
    if family != PRESET_FAMILY[preset]:
        raise ValueError(f"{source} holds a {family} LLM but preset {preset!r} is "
                         f"{PRESET_FAMILY[preset]}; pick the matching preset")
    if model.config.image_token_id is None:
        raise ValueError(f"{source}: config has no image_token_index; transformers 5 needs a "
                         "checkpoint whose tokenizer has the <image> token")
    llm_tok = AutoTokenizer.from_pretrained(source)
    qformer_tok = AutoTokenizer.from_pretrained(source, subfolder="qformer_tokenizer")
    return _bundle(model, name, family, qformer_tok, llm_tok)


def build_model(preset: str, *, model_path: str | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, meta: bool = False, seed: int = 0,
                random_weights: bool = False, text_layers: int | None = None,
                init: str | None = None) -> ModelBundle:
    """Build the model of ``preset`` with its weights stored in ``dtype``.

    Toy presets, offline: ``init="random"``: random init with ``seed`` (the global RNG is left
    untouched); ``"pretrained"`` (the tiny presets' default, defaults.default_init): the
    shipped weights, checked against their manifest.
    Real presets: ``meta=True`` builds from the offline config on the meta device with no
    weights and ``None`` tokenizers (for counting); ``random_weights=True`` builds them at full
    size with deterministic random weights from ``seed`` and stand-in tokenizers (no download);
    otherwise loads the checkpoint. ``text_layers`` (meta / random real builds only) keeps the
    LLM at full width with fewer layers, for machines whose memory cannot hold all of them.
    """
    check_choice("preset", preset, PRESETS)
    family = PRESET_FAMILY[preset]
    _check_build_args(preset, model_path, meta, random_weights, text_layers)
    init = _check_init(preset, init, meta or random_weights)
    if preset in REAL_PRESETS and not (meta or random_weights):
        return _load_real(preset, model_path, str(device), dtype)
    if meta:
        with torch.device("meta"):
            model = InstructBlipForConditionalGeneration(real_config(preset, text_layers)
                                                         if preset in REAL_PRESETS else model_config(preset))
            if family == "t5" and preset in REAL_PRESETS:
                untie_lm_head(model)
        return _bundle(model.to(dtype), preset, family, None, None)
    if random_weights:
        from trainables import random_init  # only the real-size random builds need it
        model = random_init.build_random(real_config(preset, text_layers), device, dtype, seed,
                                         untie=family == "t5")
        qformer_tok, llm_tok = random_init.standin_tokenizers(family)
        return _bundle(model, preset, family, qformer_tok, llm_tok)
    qformer_tok, llm_tok = load_toy_tokenizers(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InstructBlipForConditionalGeneration(_toy_config(preset, llm_tok))
        # transformers zero-initialises query_tokens (a checkpoint overwrites them); identical
        # queries stay identical under training, so draw them like LAVIS does: N(0, 0.02).
        with torch.no_grad():
            model.query_tokens.normal_(0.0, model.config.qformer_config.initializer_range)
        # The LM head is frozen in every Table-1 row, so its random init decides how far the
        # toy can move its logits. T5 draws an untied head with std 1.0 (start loss ~30-130
        # nats, stalls learning); LLaMA's 0.02 keeps logits near zero (loss pinned at ln V).
        # Both get the scale of a tied head instead: std d_model**-0.5. Real checkpoints are
        # trained, so this only concerns the toys.
        head = model.language_model.lm_head.weight
        with torch.no_grad():
            head.normal_(0.0, head.shape[1] ** -0.5)
    if init == "pretrained":
        load_shipped(model, preset)
    return _bundle(model.to(device=device, dtype=dtype), preset, family, qformer_tok, llm_tok)


def assert_image_tokens(input_ids: torch.Tensor, image_token_id: int, num_query_tokens: int) -> None:
    """Raise one ValueError if any row of ``input_ids`` lacks exactly ``num_query_tokens`` image tokens.

    transformers 5 scatters the Q-Former outputs into the image-token positions; a wrong count
    fails deep inside masked_scatter (or silently misaligns), so batching checks it up front.
    """
    counts = (input_ids == image_token_id).sum(dim=-1)
    bad = (counts != num_query_tokens).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"input_ids rows {bad[:5]} hold {counts[bad[:5]].tolist()} image tokens "
            f"(id {image_token_id}); each row needs exactly num_query_tokens={num_query_tokens}"
        )
