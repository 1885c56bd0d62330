"""Architecture configs of the two real checkpoints, available offline.

Why: the dry-run planner and the parameter accounting need the real models' shapes (e.g. to
print the 9 methods x 4 ranks table for Vicuna-7B) on machines with no network and no weights.
The values are the published ``config.json`` of ``Salesforce/instructblip-flan-t5-xl`` and
``Salesforce/instructblip-vicuna-7b`` (architecture fields only; generation settings dropped).
They are also transformers' own InstructBLIP defaults for the vision and Q-Former parts.
Only shapes matter here: a real run loads the checkpoint's own config.json with its weights.
"""
from __future__ import annotations

from typing import Any

# EVA ViT-g/14 as InstructBLIP uses it (layers up to the penultimate one, 224 px input).
VISION: dict[str, Any] = {
    "hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39,
    "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "hidden_act": "gelu",
    "layer_norm_eps": 1e-6, "qkv_bias": True,
}

# BERT-base Q-Former with cross-attention every 2nd layer; 30522 BERT tokens + 1 added ([DEC]).
QFORMER: dict[str, Any] = {
    "vocab_size": 30523, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512,
    "layer_norm_eps": 1e-12, "pad_token_id": 0, "cross_attention_frequency": 2,
    "encoder_hidden_size": 1408,
}

# Flan-T5-XL: 24+24 layers, d_model 2048, gated-GELU FFN of 5120, untied LM head (transformers 5's
# T5Config forces tie_word_embeddings=True; presets.untie_lm_head undoes it, as loading the real
# checkpoint does when it finds two different tensors).
FLAN_T5_XL_TEXT: dict[str, Any] = {
    "model_type": "t5", "vocab_size": 32128, "d_model": 2048, "d_kv": 64, "d_ff": 5120,
    "num_layers": 24, "num_decoder_layers": 24, "num_heads": 32,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1,
    "decoder_start_token_id": 0,
}

# Vicuna-7B (LLaMA-7B): 32 layers, hidden 4096, SwiGLU FFN of 11008. The hub checkpoint (config
# of commit 92cb457, "Update model for latest transformers", unchanged since but for
# video_token_index) has 32000 LLaMA tokens + "[PAD]"=32000 + "<image>"=32001 (+ "<video>"=32002)
# and its embedding/LM head resized to 32064 rows (a multiple of 64), so vocab_size is 32064.
VICUNA_7B_TEXT: dict[str, Any] = {
    "model_type": "llama", "vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128,
    "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0, "tie_word_embeddings": False, "pad_token_id": 32000,
    "bos_token_id": 0, "eos_token_id": 1,
}

# preset -> (text config, image token id, num_query_tokens)
REAL_CONFIGS: dict[str, tuple[dict[str, Any], int, int]] = {
    "flan-t5-xl": (FLAN_T5_XL_TEXT, 32100, 32),
    "vicuna-7b": (VICUNA_7B_TEXT, 32001, 32),
}

# Where from_pretrained finds each checkpoint when no --model-path is given.
HF_REPO_IDS: dict[str, str] = {
    "flan-t5-xl": "Salesforce/instructblip-flan-t5-xl",
    "vicuna-7b": "Salesforce/instructblip-vicuna-7b",
}
