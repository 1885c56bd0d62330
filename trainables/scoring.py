"""Rank classification: every labelled candidate is scored by its summed token NLL given image +
prompt; the lowest wins (the paper's evaluation).

Why prefix sharing: a problem has 2-5 candidates that share the image and the prompt. The
batched scorer runs the vision encoder, Q-Former and projection once per problem, and
- T5: the LLM encoder once per problem, and the decoder's cross-attention keys/values projected
  once per problem and repeated for that problem's candidates; the decoder scores all
  candidates of a batch of problems in one call;
- LLaMA: the image+prompt prefix once per problem (left-padded across problems, with explicit
  position ids so padding changes nothing), keeping its KV cache; the cache is repeated per
  candidate and all candidates are scored in one call from it. The first candidate token is
  scored from the prefix's last logits.
``score_naive`` is the reference: one full forward per candidate, batch size 1. Both sum the
NLL over the candidate's tokens including </s> (see trainables.batching).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from trainables.batching import (
    IGNORE,
    EncodedProblem,
    TokenSpec,
    collate_train,
    pad_left,
    pad_right,
    qformer_inputs,
)
from trainables.step import Precision, forward_logits, token_nll, unwrap


@dataclass(frozen=True)
class ScoreResult:
    """Scores of a list of problems."""

    predictions: list[int]
    """Index of the lowest-NLL candidate per problem."""
    scores: list[list[float]]
    """Summed NLL per candidate, per problem."""

    def accuracy(self, problems: Sequence[EncodedProblem]) -> float:
        hits = sum(int(p == q.answer_index) for p, q in zip(self.predictions, problems))
        return hits / max(1, len(problems))


def _result(nll: torch.Tensor, counts: list[int]) -> ScoreResult:
    rows = torch.split(nll.float().cpu(), counts)
    return ScoreResult(predictions=[int(r.argmin()) for r in rows], scores=[r.tolist() for r in rows])


def _owner(problems: Sequence[EncodedProblem], device: torch.device) -> torch.Tensor:
    """Index of each candidate's problem; built from Python ints (no data-dependent op), so the
    scorer also runs on shape-only fake tensors when benchmarks count its FLOPs."""
    return torch.tensor([i for i, p in enumerate(problems) for _ in p.candidate_ids], device=device)


def _prefix_embeds(m: nn.Module, problems: Sequence[EncodedProblem], pixel_values: torch.Tensor,
                   ids: torch.Tensor, spec: TokenSpec) -> torch.Tensor:
    """LLM input embeddings of the prefixes, image tokens replaced by the projected Q-Former output."""
    q_ids, q_mask = qformer_inputs(problems, spec)
    device = pixel_values.device
    feats = m.get_image_features(pixel_values, qformer_input_ids=q_ids.to(device),
                                 qformer_attention_mask=q_mask.to(device), return_dict=True).pooler_output
    embeds = m.get_input_embeddings()(ids)
    image_mask = (ids == spec.image_token_id).unsqueeze(-1)
    return embeds.masked_scatter(image_mask, feats.to(embeds.dtype))


def _score_encoder_decoder(m: nn.Module, problems: Sequence[EncodedProblem],
                           pixel_values: torch.Tensor, spec: TokenSpec) -> torch.Tensor:
    device = pixel_values.device
    ids, mask = (t.to(device) for t in pad_right([p.prefix_ids for p in problems], spec.pad_id))
    lm = m.language_model
    encoded = lm.get_encoder()(inputs_embeds=_prefix_embeds(m, problems, pixel_values, ids, spec),
                               attention_mask=mask).last_hidden_state
    cands = [c for p in problems for c in p.candidate_ids]
    owner = _owner(problems, device)
    dec_in, dec_mask = pad_right([(spec.pad_id,) + c[:-1] for c in cands], spec.pad_id)
    labels, _ = pad_right(cands, IGNORE)
    out = lm(encoder_outputs=BaseModelOutput(last_hidden_state=encoded[owner]), attention_mask=mask[owner],
             decoder_input_ids=dec_in.to(device), decoder_attention_mask=dec_mask.to(device), use_cache=True,
             **{_cache_kwarg(lm): _shared_cross_attention(lm, encoded, owner)})
    return token_nll(out.logits, labels.to(device))


def _shared_cross_attention(lm: nn.Module, encoded: torch.Tensor, owner: torch.Tensor) -> EncoderDecoderCache:
    """Decoder cross-attention keys/values projected once per problem, then repeated per candidate
    (T5 reuses a cross-attention cache marked as updated instead of projecting the encoder output)."""
    cross = DynamicCache()
    cache = EncoderDecoderCache(DynamicCache(), cross)
    for i, block in enumerate(lm.get_decoder().block):
        attn = block.layer[1].EncDecAttention
        shape = (*encoded.shape[:-1], -1, attn.key_value_proj_dim)
        keys = attn.k(encoded).view(shape).transpose(1, 2)[owner]
        values = attn.v(encoded).view(shape).transpose(1, 2)[owner]
        cross.update(keys, values, i)
        cache.is_updated[i] = True
    return cache


def _score_decoder_only(m: nn.Module, problems: Sequence[EncodedProblem],
                        pixel_values: torch.Tensor, spec: TokenSpec) -> torch.Tensor:
    device = pixel_values.device
    ids, mask = (t.to(device) for t in pad_left([p.prefix_ids for p in problems], spec.pad_id))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    lm = m.language_model
    prefix = lm(inputs_embeds=_prefix_embeds(m, problems, pixel_values, ids, spec), attention_mask=mask,
                position_ids=positions, use_cache=True, logits_to_keep=1)  # only the last position is scored
    cands = [c for p in problems for c in p.candidate_ids]
    owner = _owner(problems, device)
    first = torch.tensor([c[0] for c in cands], device=device)
    nll = torch.nn.functional.cross_entropy(prefix.logits[:, -1].float()[owner], first, reduction="none")
    rest = [c[:-1] for c in cands]  # inputs that predict c[1:]
    if max(len(r) for r in rest) == 0:
        return nll
    cache = getattr(prefix, "cache", None) or prefix.past_key_values
    cache.batch_select_indices(owner)  # one copy of the problem's prefix cache per candidate
    cand_in, cand_mask = (t.to(device) for t in pad_right(rest, spec.pad_id))
    lengths = mask.sum(-1)[owner]
    cand_pos = lengths.unsqueeze(1) + torch.arange(cand_in.shape[1], device=device).unsqueeze(0)
    out = lm(input_ids=cand_in, attention_mask=torch.cat([mask[owner], cand_mask], dim=1),
             position_ids=cand_pos, use_cache=True, **{_cache_kwarg(lm): cache})
    labels, _ = pad_right([c[1:] for c in cands], IGNORE)
    return nll + token_nll(out.logits, labels.to(device))


def _cache_kwarg(lm: nn.Module) -> str:
    """transformers >= 5.2x names the KV-cache argument ``cache``; earlier 5.x ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The unwrapped model in eval mode (no dropout) for scoring, restored afterwards: scoring
    runs between training steps of the same model."""
    m = unwrap(model)
    was_training = m.training
    m.eval()
    try:
        yield m
    finally:
        m.train(was_training)


@torch.inference_mode()
def candidate_nll(model: nn.Module, problems: Sequence[EncodedProblem], pixel_values: torch.Tensor,
                  spec: TokenSpec, precision: Precision) -> torch.Tensor:
    """Summed NLL of every candidate of ``problems``, flat in problem order: what
    ``score_candidates`` ranks. ``pixel_values`` may also be cached ViT trunk features
    (trainables.vision_features)."""
    with _eval_mode(model) as m, precision.autocast():
        score = _score_encoder_decoder if spec.family.encoder_decoder else _score_decoder_only
        return score(m, problems, pixel_values, spec)


def score_candidates(model: nn.Module, problems: Sequence[EncodedProblem], pixel_values: torch.Tensor,
                     spec: TokenSpec, precision: Precision) -> ScoreResult:
    """Batched, prefix-shared scores of all candidates of ``problems`` (pixel_values in order)."""
    nll = candidate_nll(model, problems, pixel_values, spec, precision)
    return _result(nll, [len(p.candidate_ids) for p in problems])


def score_in_batches(model: nn.Module, problems: Sequence[EncodedProblem],
                     pixels_for: Callable[[Sequence[EncodedProblem]], torch.Tensor], spec: TokenSpec,
                     precision: Precision, batch_size: int) -> ScoreResult:
    """Score a whole split ``batch_size`` problems per call, grouping problems of similar prefix
    length (less padding), with results in the original order. ``pixels_for`` maps a chunk of
    problems to its pixel values on the model's device."""
    order = sorted(range(len(problems)), key=lambda i: (len(problems[i].prefix_ids), i))
    predictions: list[int] = [0] * len(problems)
    scores: list[list[float]] = [[] for _ in problems]
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        chunk = [problems[i] for i in idx]
        result = score_candidates(model, chunk, pixels_for(chunk), spec, precision)
        for i, pred, score in zip(idx, result.predictions, result.scores):
            predictions[i], scores[i] = pred, score
    return ScoreResult(predictions=predictions, scores=scores)


@torch.inference_mode()
def score_unshared(model: nn.Module, problems: Sequence[EncodedProblem], pixel_values: torch.Tensor,
                   spec: TokenSpec, precision: Precision) -> ScoreResult:
    """One full forward over all candidates of ``problems`` as separate rows: batched, but the
    image, Q-Former and prompt are recomputed for every candidate (no prefix sharing)."""
    rows = [EncodedProblem(p.pid, p.image, p.qformer_ids, p.prefix_ids, p.candidate_ids, answer_index=c)
            for p in problems for c in range(len(p.candidate_ids))]
    owner = [i for i, p in enumerate(problems) for _ in p.candidate_ids]
    batch = collate_train(rows, pixel_values[owner].cpu(), spec).to(pixel_values.device)
    with _eval_mode(model) as m, precision.autocast():
        nll = token_nll(forward_logits(m, batch), batch.labels)
    return _result(nll, [len(p.candidate_ids) for p in problems])


@torch.inference_mode()
def score_naive(model: nn.Module, problems: Sequence[EncodedProblem], pixel_values: torch.Tensor,
                spec: TokenSpec, precision: Precision) -> ScoreResult:
    """Reference: one full forward (vision .. LLM) per candidate, batch size 1, no sharing."""
    nll = []
    with _eval_mode(model) as m:
        for i, problem in enumerate(problems):
            for c in range(len(problem.candidate_ids)):
                one = EncodedProblem(problem.pid, problem.image, problem.qformer_ids, problem.prefix_ids,
                                     problem.candidate_ids, answer_index=c)
                batch = collate_train([one], pixel_values[i: i + 1].cpu(), spec).to(pixel_values.device)
                with precision.autocast():
                    nll.append(token_nll(forward_logits(m, batch), batch.labels))
    return _result(torch.cat(nll), [len(p.candidate_ids) for p in problems])
