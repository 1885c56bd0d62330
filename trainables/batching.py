"""Tokenisation of Examples into model inputs, once per trial, and padding into batches.

Why tokenise once: a tiny trial runs in seconds, so re-tokenising every epoch would dominate;
only the images change between epochs (augmentation), so the token ids are fixed up front.

Token layout: the one the checkpoints were instruction-tuned with (LAVIS blip2_t5_instruct /
blip2_vicuna_instruct; transformers' ``InstructBlipProcessor`` builds the same prompt ids), and
identical in training and scoring, so the scored likelihood is the trained one (the prefix is
the family's ``Family.prefix``, trainables.families):
- T5 (encoder-decoder): encoder = ``num_query_tokens`` image tokens + prompt + ``</s>``;
  decoder target = candidate + ``</s>``, decoder input = start token + target[:-1].
- LLaMA (decoder-only): image tokens, THEN the tokenizer's BOS (``</s>`` for the real Vicuna,
  whose LAVIS/HF tokenizer sets bos = eos), then the prompt; then candidate + ``</s>``. The
  loss/score covers the candidate and ``</s>`` only.
Candidates are tokenized as standalone text, as LAVIS does (``tok(c + eos)[1:]``): no space is
prepended. A SentencePiece tokenizer adds its word-boundary ``▁`` itself; a leading " " would
give the legacy (Prepend/Replace) LLaMA tokenizer an extra ``▁`` token the checkpoint never saw.
The summed NLL of a candidate includes its ``</s>`` token (the model must also say "done").

Prompt cap: the data layer already cuts long context at prepare time; ``max_prompt_tokens`` is a
safety net applied to the prompt text (image tokens excluded) and to the Q-Former text. It cuts
from the LEFT, because question and options sit at the end of the paper's templates.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainables.families import Family, family_spec
from trainables.presets import ModelBundle, assert_image_tokens

IGNORE = -100
"""Label value ignored by the loss (the prompt part of a LLaMA sequence, padding)."""


@dataclass(frozen=True)
class TokenSpec:
    """Token ids and layout facts batching and scoring need, taken from a ModelBundle."""

    family: Family
    """The LLM family's spec: input layout and whether the answer goes to a decoder."""
    pad_id: int
    """LLM pad token (also T5's decoder start token)."""
    qformer_pad_id: int
    """Q-Former tokenizer's pad token."""
    image_token_id: int
    """Placeholder replaced by the Q-Former outputs."""
    num_query_tokens: int
    """Image tokens per LLM input."""

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> TokenSpec:
        return cls(family=family_spec(bundle.family), pad_id=int(bundle.llm_tokenizer.pad_token_id),
                   qformer_pad_id=int(bundle.qformer_tokenizer.pad_token_id),
                   image_token_id=int(bundle.image_token_id),
                   num_query_tokens=int(bundle.num_query_tokens))


@dataclass(frozen=True)
class EncodedProblem:
    """One problem, tokenised: what training and scoring consume (besides the image)."""

    pid: str
    image: torch.Tensor
    """uint8 (3, S, S); transformed per batch."""
    qformer_ids: tuple[int, ...]
    """Q-Former instruction text, [CLS] ... [SEP]."""
    prefix_ids: tuple[int, ...]
    """LLM input before the answer (T5: the whole encoder input)."""
    candidate_ids: tuple[tuple[int, ...], ...]
    """Each labelled candidate's tokens, ending with </s>."""
    answer_index: int


@dataclass
class TrainBatch:
    """Padded tensors of one micro-batch. ``labels`` are aligned with the logits (no shift)."""

    pixel_values: torch.Tensor
    qformer_input_ids: torch.Tensor
    qformer_attention_mask: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    decoder_input_ids: torch.Tensor | None = None
    decoder_attention_mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> TrainBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return TrainBatch(**moved)

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


def _cut_left(ids: list[int], cap: int) -> list[int]:
    return ids[-cap:] if len(ids) > cap else ids


def llm_prefix(family: str, image_ids: list[int], prompt_ids: list[int], bos_id: int | None,
               eos_id: int) -> list[int]:
    """The LLM input before the answer, as the family's spec lays it out (trainables.families:
    T5 ``images + prompt + </s>``; LLaMA ``images + BOS + prompt``)."""
    return family_spec(family).prefix(image_ids, prompt_ids, bos_id, eos_id)


def encode_examples(examples: Sequence, bundle: ModelBundle, max_prompt_tokens: int) -> list[EncodedProblem]:
    """Tokenise Examples (trainables.data) with the bundle's tokenizers, batched per call."""
    if not examples:
        return []
    ltok, qtok = bundle.llm_tokenizer, bundle.qformer_tokenizer
    images = [bundle.image_token_id] * bundle.num_query_tokens
    prompts = ltok([e.prompt for e in examples], add_special_tokens=False).input_ids
    qtexts = qtok([e.qformer_text for e in examples], add_special_tokens=False).input_ids
    flat = [c for e in examples for c in e.candidates]
    cand_tok = iter(ltok(flat, add_special_tokens=False).input_ids)
    out = []
    for ex, prompt, qtext in zip(examples, prompts, qtexts):
        prefix = llm_prefix(bundle.family, images, _cut_left(prompt, max_prompt_tokens),
                            ltok.bos_token_id, ltok.eos_token_id)
        qids = [qtok.cls_token_id] + _cut_left(qtext, max(1, max_prompt_tokens - 2)) + [qtok.sep_token_id]
        cands = tuple(tuple(next(cand_tok)) + (ltok.eos_token_id,) for _ in ex.candidates)
        out.append(EncodedProblem(pid=ex.pid, image=ex.image, qformer_ids=tuple(qids),
                                  prefix_ids=tuple(prefix), candidate_ids=cands,
                                  answer_index=int(ex.answer_index)))
    return out


def pad_right(seqs: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) with sequences left-aligned and ``value`` after them."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def pad_left(seqs: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) with sequences right-aligned (so every row's last position is real)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def stack_images(problems: Sequence[EncodedProblem]) -> torch.Tensor:
    """uint8 (B, 3, S, S) for the image transform."""
    return torch.stack([p.image for p in problems])


def qformer_inputs(problems: Sequence[EncodedProblem], spec: TokenSpec) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_right([p.qformer_ids for p in problems], spec.qformer_pad_id)


def collate_train(problems: Sequence[EncodedProblem], pixel_values: torch.Tensor,
                  spec: TokenSpec) -> TrainBatch:
    """Teacher-forced batch on each problem's correct candidate (right padding)."""
    q_ids, q_mask = qformer_inputs(problems, spec)
    targets = [p.candidate_ids[p.answer_index] for p in problems]
    if spec.family.encoder_decoder:
        input_ids, attention_mask = pad_right([p.prefix_ids for p in problems], spec.pad_id)
        labels, _ = pad_right(targets, IGNORE)
        dec_in, dec_mask = pad_right([(spec.pad_id,) + t[:-1] for t in targets], spec.pad_id)
        extra = {"decoder_input_ids": dec_in, "decoder_attention_mask": dec_mask}
    else:
        # Input stops one token short; labels[t] is the token predicted at position t.
        seqs = [p.prefix_ids + t[:-1] for p, t in zip(problems, targets)]
        input_ids, attention_mask = pad_right(seqs, spec.pad_id)
        label_rows = [(IGNORE,) * (len(p.prefix_ids) - 1) + t for p, t in zip(problems, targets)]
        labels, _ = pad_right(label_rows, IGNORE)
        extra = {}
    assert_image_tokens(input_ids, spec.image_token_id, spec.num_query_tokens)
    return TrainBatch(pixel_values=pixel_values, qformer_input_ids=q_ids, qformer_attention_mask=q_mask,
                      input_ids=input_ids, attention_mask=attention_mask, labels=labels, **extra)
