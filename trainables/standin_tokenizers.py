"""SentencePiece-style LLM tokenizers with the real checkpoints' special-token layout, trained at
run time (milliseconds) on the project's own corpus; nothing is downloaded.

Why: (1) the input-layout tests must show that our token ids equal LAVIS's and
``InstructBlipProcessor``'s not only for the shipped byte-level tokenizers but for the kind the
real Vicuna uses: a SentencePiece BPE with byte fallback whose word boundary is ``▁``, built
either the transformers-5 way (``Metaspace`` pre-tokenizer, ``LlamaTokenizer``) or the legacy
hub ``tokenizer.json`` way (``Prepend("▁")`` + ``Replace(" ", "▁")`` normalizer); (2) the
real-size random-weight builds (``presets.build_model(..., random_weights=True)``) need
tokenizers whose ids fit the real vocabularies, with ``<image>`` at the id the real config
names, so batching, scoring and checkpoints run exactly as with the downloaded checkpoint.

Layouts (from the checkpoints' ``added_tokens.json`` / ``special_tokens_map.json``):
- Vicuna-7B: ``<unk>=0 <s>=1 </s>=2``, byte pieces ``<0x00>..<0xFF>`` = 3..258, pieces up to
  32000, then ``[PAD]=32000 <image>=32001``; LAVIS and the HF checkpoint set
  bos = eos = unk = ``</s>`` (so the "BOS" after the image tokens is id 2).
- Flan-T5-XL: ``<pad>=0 </s>=1 <unk>=2``, pieces up to 32100 (T5's 100 sentinels included),
  ``<image>=32100``; ``</s>`` appended to every sequence.
The learned pieces come from the corpus (about a thousand); the rest of the id range is filled
with unreachable placeholder pieces, so only the ids of the special tokens are "real".
"""
from __future__ import annotations

import json
from functools import cache

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import LlamaTokenizer, PreTrainedTokenizerFast

from trainables.tokenizer_build import CORPUS, IMAGE_TOKEN

LLAMA_PIECES = 32000
"""Vicuna's SentencePiece vocabulary; [PAD] and <image> follow it."""
T5_PIECES = 32100
"""Flan-T5's SentencePiece vocabulary incl. its 100 sentinel tokens; <image> follows it."""
_LEARNED = 1000


@cache
def _pieces(specials: tuple[str, ...], total: int, byte_pieces: bool) -> tuple[dict[str, int], tuple]:
    """(vocab, merges): ``specials``, optional byte-fallback pieces, BPE pieces learned from the
    corpus with ``▁`` word boundaries, placeholders up to ``total`` ids."""
    tok = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=_LEARNED, special_tokens=list(specials), show_progress=False)
    tok.train_from_iterator(CORPUS.read_text(encoding="utf-8").splitlines(), trainer=trainer)
    learned = json.loads(tok.to_str())["model"]
    vocab = {s: i for i, s in enumerate(specials)}
    if byte_pieces:
        vocab.update({f"<0x{b:02X}>": len(specials) + b for b in range(256)})
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    while len(vocab) < total:
        vocab[f"<unused_{len(vocab)}>"] = len(vocab)
    merges = tuple(tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"])
    return vocab, merges


def llama_tokenizer(*, legacy: bool = False) -> PreTrainedTokenizerFast:
    """A Vicuna-layout SentencePiece tokenizer: ``LlamaTokenizer`` (Metaspace, what transformers 5
    builds for the real checkpoint) or, with ``legacy``, the hub's Prepend/Replace normalizer."""
    vocab, merges = _pieces(("<unk>", "<s>", "</s>"), LLAMA_PIECES, byte_pieces=True)
    roles = {"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "[PAD]"}
    if not legacy:
        tok = LlamaTokenizer(vocab=dict(vocab), merges=list(merges), add_bos_token=True,
                             extra_special_tokens={"image_token": IMAGE_TOKEN}, **roles)
    else:
        raw = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), byte_fallback=True,
                                   fuse_unk=True, unk_token="<unk>"))
        raw.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
        raw.post_processor = processors.TemplateProcessing(
            single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", vocab["</s>"])])
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, extra_special_tokens={"image_token": IMAGE_TOKEN},
                                      **roles)
    _check_ids(tok, {"[PAD]": LLAMA_PIECES, IMAGE_TOKEN: LLAMA_PIECES + 1})
    return tok


def t5_tokenizer() -> PreTrainedTokenizerFast:
    """A Flan-T5-layout SentencePiece tokenizer (Metaspace, ``</s>`` appended, ``<image>=32100``)."""
    vocab, merges = _pieces(("<pad>", "</s>", "<unk>"), T5_PIECES, byte_pieces=False)
    raw = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), byte_fallback=False,
                               fuse_unk=True, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    raw.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>",
                                  unk_token="<unk>", extra_special_tokens={"image_token": IMAGE_TOKEN})
    _check_ids(tok, {IMAGE_TOKEN: T5_PIECES})
    return tok


def _check_ids(tok: PreTrainedTokenizerFast, expected: dict[str, int]) -> None:
    got = {t: tok.convert_tokens_to_ids(t) for t in expected}
    if got != expected:  # a transformers change in how added tokens are numbered
        raise RuntimeError(f"stand-in tokenizer ids {got} differ from the real layout {expected}")
