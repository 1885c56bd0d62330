"""Build the small tokenizers shipped with the tiny/small presets (run once; outputs are committed).

Why: the tiny presets must build offline in well under a second, so they cannot download
BERT/T5/LLaMA tokenizers. Instead three small byte-level BPE tokenizers are trained on text the
project owns (``trainables/assets/tokenizer_corpus.txt``: the prompt templates, the synthetic
benchmarks' vocabulary and some plain English). Byte-level BPE has no unknown token: any text,
including real ScienceQA/IconQA samples, tokenizes losslessly.

Each tokenizer mimics the special-token layout of the model it stands in for:
- ``qformer``: BERT-style ``[PAD]=0 [UNK] [CLS] [SEP] [MASK]``, wraps text as ``[CLS] x [SEP]``
  (the Q-Former's pad_token_id is 0, as in BERT).
- ``t5``: ``<pad>=0 </s>=1 <unk>=2``, appends ``</s>`` (T5 uses pad as decoder start).
- ``llama``: ``<unk>=0 <s>=1 </s>=2 <pad>=3``, prepends ``<s>``.
Both LLM tokenizers also carry the special image token ``<image>`` that transformers 5's
InstructBLIP replaces with the Q-Former outputs (``config.image_token_id``).

Run: ``python -m trainables.tokenizer_build`` (deterministic; rewrites assets/tokenizers/*).
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ASSETS = Path(__file__).resolve().parent / "assets"
CORPUS = ASSETS / "tokenizer_corpus.txt"
TOKENIZER_DIR = ASSETS / "tokenizers"
IMAGE_TOKEN = "<image>"
VOCAB_SIZE = 1024
"""Upper bound of the BPE vocabulary; a small corpus may stop short of it."""

# name -> (ordered special tokens, kwargs naming their roles for transformers)
SPECIALS: dict[str, tuple[list[str], dict[str, str]]] = {
    "qformer": (
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
         "sep_token": "[SEP]", "mask_token": "[MASK]"},
    ),
    "t5": (
        ["<pad>", "</s>", "<unk>", IMAGE_TOKEN],
        {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
    ),
    "llama": (
        ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN],
        {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
    ),
}


def _post_processor(name: str, tok: Tokenizer) -> processors.PostProcessor:
    """The special tokens each family adds around one sequence (pairs are not used here)."""
    ids = {t: tok.token_to_id(t) for t in SPECIALS[name][0]}
    if name == "qformer":
        return processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
        )
    if name == "t5":
        return processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", ids["</s>"])]
        )
    return processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", ids["<s>"])]
    )


def train_tokenizer(name: str, text: str) -> PreTrainedTokenizerFast:
    """Train one byte-level BPE tokenizer on ``text`` and wrap it for transformers."""
    specials, roles = SPECIALS[name]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(text.splitlines(), trainer=trainer)
    tok.post_processor = _post_processor(name, tok)
    # A named extra special token becomes ``tokenizer.image_token`` (what InstructBlipProcessor
    # and the batching code look for) and survives save/load.
    extra = {"image_token": IMAGE_TOKEN} if IMAGE_TOKEN in specials else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, extra_special_tokens=extra, model_max_length=2048, **roles
    )


def build_all(out_dir: Path = TOKENIZER_DIR) -> dict[str, Path]:
    """Train and save the three tokenizers under ``out_dir/<name>``; returns their paths."""
    text = CORPUS.read_text(encoding="utf-8")
    paths = {}
    for name in SPECIALS:
        path = out_dir / name
        train_tokenizer(name, text).save_pretrained(str(path))
        paths[name] = path
    return paths


if __name__ == "__main__":
    for name, path in build_all().items():
        loaded = PreTrainedTokenizerFast.from_pretrained(str(path))
        print(f"{name}: {len(loaded)} tokens -> {path}")
