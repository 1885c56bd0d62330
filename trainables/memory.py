"""Peak memory of one trial, from what the trial actually keeps, and the setting that fits.

Why here (not in the planner): the trial itself picks its micro-batch / checkpointing /
scoring batch for the memory Ray gave it (``activation_checkpointing="auto"``), and the
``--dry-run`` planner (orchestrator.driver.plan) prints the same numbers per GPU type, so both must
use one model. Inputs are the model's shapes (``ModelShape.from_config``), its parameter
counts (trainables.accounting) and a ``MemorySetup``; nothing is allocated.

Peak = weights + max(training, scoring) + overhead, where
- weights: frozen parameters in the storage dtype, trainable ones as fp32 masters;
- training: fp32 gradients + AdamW m and v of the trainable parameters, 16-bit copies autocast
  makes of fp32 weights, the activations autograd keeps at the micro-batch (below) and the LM
  logits with their fp32 loss copies;
- scoring (no grad, AdamW states still resident): one layer's working set plus the KV caches
  the batched scorer holds: T5's cross-attention keys/values per candidate, LLaMA's prefix
  cache repeated per candidate (trainables.scoring), and the candidates' logits;
- checkpointing (CPU only: the copies live in host memory): AdamW states + the last and best
  fp32 copies of what trains, after the gradients are freed;
- overhead: CUDA context + allocator slack on GPU; interpreter, libraries and malloc arenas on
  CPU (measured: tests/trainables/test_memory.py, the real-size tests).

Activations kept for backward, bytes per layer per sequence at 16-bit compute, counted with
``torch.autograd.graph.saved_tensors_hooks`` on transformers 5's layers under bf16 autocast
(frozen 16-bit weights; d model width, f FFN width, n heads, T tokens). The counts do not
depend on which frozen layers carry LoRA enough to matter (LoRA saved slightly less, on CPU):
  T5 encoder block   T(32d + 16f) + 6nT^2 (+ 8T^2 once: the int64 position buckets)
  T5 decoder block   T(48d + 16f) + 6nT^2 + 6nT*T_enc + 6*T_enc*d
  LLaMA layer (SDPA) T(24d + 8f + 4n) (+ 2T^2 once: the attention mask)
  Q-Former layer     T_q(14h + 2f) + 10n*T_q^2; cross-attention layers + 4T_v*h + 10n*Q*T_v + 4Qh;
                     trained (baseline, llm_lora) + 18h*T_q for its weight gradients
With activation checkpointing a layer keeps only its input (2Td) and one layer is recomputed
at a time during backward. fp32 compute doubles every activation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from trainables.methods import PeftSetup

GIB = 2**30
GPU_TYPES: dict[str, int] = {
    "A10G-24GB": int(22.19 * GIB),
    "A100-40GB": int(39.39 * GIB),
    "A100-80GB": int(79.15 * GIB),
    "H100-80GB": int(79.11 * GIB),
    "H200-141GB": int(139.8 * GIB),
}
"""The GPU types the planner reports, with the total memory PyTorch sees on them
(``torch.cuda.get_device_properties(0).total_memory``; the "total capacity" of its
out-of-memory messages), which is less than the marketing number."""
CUDA_CONTEXT_BYTES = 600 * 2**20
"""CUDA context + cuBLAS workspace, held outside PyTorch's allocator."""
CUDA_ALLOCATOR_SLACK = 0.08
"""Fragmentation of PyTorch's caching allocator, as a fraction of the allocated peak."""
CPU_BASE_RSS_BYTES = 700 * 2**20
"""RSS of a trial process before the model exists (python, torch, transformers, peft, data)."""
CPU_MALLOC_SLACK = 0.05
"""glibc arenas keep freed activations mapped; fraction of the dynamic (non-weight) peak."""
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
FIT_HEADROOM = 0.05
"""A setting "fits" only with 5% of the memory to spare: the activation counts are calibrated
on CPU (benchmarks.gpu_check measures the ratio on a GPU)."""


@dataclass(frozen=True)
class ModelShape:
    """The dimensions the estimate needs, read once from an InstructBLIP config."""

    family: str
    vocab: int
    llm_hidden: int
    llm_ff: int
    llm_heads: int
    llm_layers: int
    """T5: encoder blocks; LLaMA: decoder layers."""
    llm_decoder_layers: int
    """T5 decoder blocks; 0 for LLaMA."""
    qformer_hidden: int
    qformer_ff: int
    qformer_heads: int
    qformer_layers: int
    qformer_cross_every: int
    vit_hidden: int
    vit_tokens: int
    num_query_tokens: int

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        text, qf, vis = config.text_config, config.qformer_config, config.vision_config
        t5 = text.model_type == "t5"
        return cls(
            family="t5" if t5 else "llama", vocab=text.vocab_size,
            llm_hidden=text.d_model if t5 else text.hidden_size,
            llm_ff=text.d_ff if t5 else text.intermediate_size,
            llm_heads=text.num_heads if t5 else text.num_attention_heads,
            llm_layers=text.num_layers if t5 else text.num_hidden_layers,
            llm_decoder_layers=text.num_decoder_layers if t5 else 0,
            qformer_hidden=qf.hidden_size, qformer_ff=qf.intermediate_size,
            qformer_heads=qf.num_attention_heads, qformer_layers=qf.num_hidden_layers,
            qformer_cross_every=qf.cross_attention_frequency, vit_hidden=vis.hidden_size,
            vit_tokens=(vis.image_size // vis.patch_size) ** 2 + 1,
            num_query_tokens=config.num_query_tokens)


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of one trial (trainables.accounting.ParamReport gives them)."""

    total: int
    """All parameters incl. LoRA."""
    trainable: int
    lora: int
    """LoRA parameters (Q-Former + LLM)."""
    vit: int
    """ViT parameters (frozen; not resident when a ViT feature cache serves the trial)."""
    qformer_trained: bool
    """The Q-Former's own weights train (baseline, llm_lora)."""
    qformer: int = 0
    """Q-Former parameters incl. the query tokens (what trains fully when qformer_trained)."""
    lora_parts: tuple[str, ...] = ()
    """Where LoRA sits: any of "qformer", "llm_attn", "llm_ffn" (lora_parts_of)."""


def lora_parts_of(peft: PeftSetup) -> tuple[str, ...]:
    """The parts of the model whose layers carry LoRA for a cell (the LLM's by sublayer)."""
    lora = peft.spec.lora
    parts = ["qformer"] if "qformer" in lora else []
    if "llm" in lora:
        parts += {"attn": ["llm_attn"], "ffn": ["llm_ffn"]}.get(peft.sublayer, ["llm_attn", "llm_ffn"])
    return tuple(parts)


@dataclass(frozen=True)
class MemorySetup:
    """How the trial runs: device, dtypes, batch sizes and the token lengths to plan for."""

    device: str
    """"cuda" or "cpu"."""
    weight_dtype: str
    """Storage dtype of the frozen weights: bf16 | fp16 | fp32."""
    compute_16bit: bool
    """Autocast to bf16/fp16 (False: fp32 compute)."""
    batch_size: int
    """Training micro-batch."""
    eval_batch_size: int
    """Problems the scorer handles at once."""
    activation_checkpointing: bool
    prompt_tokens: int
    """LLM prompt tokens (without image tokens and specials): plan for the longest."""
    answer_tokens: int
    """Tokens of the longest candidate incl. </s>."""
    qformer_text_tokens: int
    """Q-Former instruction tokens incl. [CLS]/[SEP]."""
    candidates: int
    """Most candidates per problem."""
    vit_resident: bool = True
    """False when the ViT's features come from a cache and its weights are not loaded."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per part; ``peak_bytes`` is what the device must hold."""

    weights_bytes: int
    optimizer_bytes: int
    """fp32 gradients + AdamW m, v (training only; m, v also resident while scoring)."""
    activation_bytes: int
    """Kept for backward at the micro-batch, incl. logits and autocast weight copies."""
    scoring_bytes: int
    """Scoring working set + KV caches at the eval batch."""
    overhead_bytes: int
    peak_bytes: int

    def fits(self, capacity_bytes: int) -> bool:
        """With FIT_HEADROOM of the capacity left over for the estimate's own error."""
        return self.peak_bytes <= (1.0 - FIT_HEADROOM) * capacity_bytes

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in vars(self).items()}


@dataclass(frozen=True)
class Fit:
    """A setting that fits a memory budget (what ``activation_checkpointing="auto"`` runs)."""

    batch_size: int
    grad_accum: int
    eval_batch_size: int
    activation_checkpointing: bool
    estimate: MemoryEstimate

    def as_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "grad_accum": self.grad_accum,
                "eval_batch_size": self.eval_batch_size,
                "activation_checkpointing": self.activation_checkpointing,
                "peak_bytes": self.estimate.peak_bytes}


def _tokens(s: ModelShape, m: MemorySetup) -> tuple[int, int, int]:
    """(LLM input tokens, answer/decoder tokens, Q-Former tokens) of the longest sequence."""
    q = s.num_query_tokens
    if s.family == "t5":  # images + prompt + </s> | decoder: the answer with its </s>
        return q + m.prompt_tokens + 1, m.answer_tokens, q + m.qformer_text_tokens
    # images + BOS + prompt + answer, minus the last answer token (it is only a label)
    return q + 1 + m.prompt_tokens + m.answer_tokens - 1, m.answer_tokens, q + m.qformer_text_tokens


def _llm_layers(s: ModelShape, t_in: int, t_out: int, lora: tuple[str, ...] = ()) -> tuple[int, int, int]:
    """Per sequence: (all LLM layers' kept bytes, their inputs only, the largest layer).
    LoRA keeps the inputs of its A matrices (q/v share one, the FFN's in/out two)."""
    d, f, n = s.llm_hidden, s.llm_ff, s.llm_heads
    per_token = (2 * d if "llm_attn" in lora else 0) + (2 * d + 2 * f if "llm_ffn" in lora else 0)
    if s.family == "t5":
        enc = t_in * (32 * d + 16 * f + per_token) + 6 * n * t_in**2
        dec = t_out * (48 * d + 16 * f + per_token) + 6 * n * t_out**2 + 6 * n * t_out * t_in + 6 * t_in * d
        once = 8 * (t_in**2 + t_out**2)
        full = s.llm_layers * enc + s.llm_decoder_layers * dec + once
        # checkpointed: + the fp32 position biases every layer takes as an input
        bias = 4 * n * (t_in**2 + t_out**2 + t_out * t_in)
        inputs = 2 * d * (s.llm_layers * t_in + s.llm_decoder_layers * t_out + t_in) + bias
        return full, inputs, max(enc, dec)
    layer = t_in * (24 * d + 8 * f + 4 * n + per_token)
    once = 2 * t_in**2
    return s.llm_layers * layer + once, s.llm_layers * 2 * t_in * d + once, layer


def _qformer_layers(s: ModelShape, t_q: int, trained: bool, lora: bool) -> tuple[int, int, int]:
    """Per sequence: (Q-Former kept bytes, layer inputs only, the largest layer)."""
    h, f, n, q = s.qformer_hidden, s.qformer_ff, s.qformer_heads, s.num_query_tokens
    layer = t_q * (14 * h + 2 * f) + 10 * n * t_q**2 + (18 * h * t_q if trained else 0) \
        + (t_q * (4 * h + 2 * f) if lora else 0)
    cross = 4 * s.vit_tokens * h + 10 * n * q * s.vit_tokens + 4 * q * h \
        + (4 * q * h + 4 * s.vit_tokens * s.vit_hidden if lora else 0)
    cross_layers = s.qformer_layers // s.qformer_cross_every
    full = s.qformer_layers * layer + cross_layers * cross
    inputs = s.qformer_layers * t_q * h * (4 if trained else 2)
    return full, inputs, layer + cross


def _parts(s: ModelShape, c: ParamCounts, m: MemorySetup) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    t_in, t_out, t_q = _tokens(s, m)
    return (_llm_layers(s, t_in, t_out, c.lora_parts),
            _qformer_layers(s, t_q, c.qformer_trained, "qformer" in c.lora_parts))


def kept_activation_bytes(s: ModelShape, c: ParamCounts, m: MemorySetup) -> int:
    """Bytes autograd keeps for backward from one training forward at the micro-batch,
    logits excluded: what ``saved_tensors_hooks`` count (tests/trainables/test_memory.py).
    With checkpointing only the layers' inputs (recomputation is a backward transient)."""
    (llm_full, llm_inputs, _), (qf_full, qf_inputs, _) = _parts(s, c, m)
    t_in = _tokens(s, m)[0]
    kept = llm_inputs + qf_inputs if m.activation_checkpointing else llm_full + qf_full
    glue = 4 * s.vit_tokens * s.vit_hidden + 2 * s.num_query_tokens * s.qformer_hidden + 4 * t_in * s.llm_hidden
    return m.batch_size * (kept + glue) * (1 if m.compute_16bit else 2) + _autocast_copies(c, m)


def _autocast_copies(c: ParamCounts, m: MemorySetup) -> int:
    """Autocast's 16-bit copies of fp32 weights, kept for backward; inside checkpointed
    layers (LLM, Q-Former) they are remade in the recomputation instead."""
    if not m.compute_16bit:
        return 0
    full = c.trainable - c.lora
    if m.activation_checkpointing:
        return 2 * (full - (c.qformer if c.qformer_trained else 0))
    return 2 * (full + (c.total - c.trainable if m.weight_dtype == "fp32" else 0))


def training_activation_bytes(s: ModelShape, c: ParamCounts, m: MemorySetup) -> int:
    """Training's activation peak: the kept bytes, the LM logits with the loss's fp32 copy and
    log-softmax (and their gradients), and one layer's activations and their gradients in
    backward (recomputed first when checkpointing)."""
    (_, _, llm_layer), (_, _, qf_layer) = _parts(s, c, m)
    t_in, t_out, _ = _tokens(s, m)
    logits = (t_out if s.family == "t5" else t_in) * s.vocab * 12
    layers = (2 if m.activation_checkpointing else 1) * max(llm_layer, qf_layer)
    transient = m.batch_size * (logits + layers) * (1 if m.compute_16bit else 2)
    return kept_activation_bytes(s, c, m) + transient


def scoring_bytes(s: ModelShape, m: MemorySetup) -> int:
    """The batched scorer's peak at the eval batch (trainables.scoring): the larger of the
    prefix pass (T5's encoder; LLaMA's image+prompt prefix with its cache) and the candidate
    pass, which holds the caches of every candidate row (T5: cross- and self-attention keys and
    values; LLaMA: the prefix cache repeated per candidate, grown by the answer) plus the larger
    of one layer's working set over the candidate tokens and the candidates' logits (16-bit,
    the loss's fp32 copy and log-softmax). Per-token working sets, counted with a dispatch-level
    tracker on transformers 5's layers under bf16 autocast (tests/trainables/test_memory.py):
    T5 10d + 12f (the gated-GELU FFN's intermediates, its fp32 input to ``wo``), LLaMA 14d + 8f."""
    t_in, t_out, t_q = _tokens(s, m)
    e, rows, d, f, n = m.eval_batch_size, m.eval_batch_size * m.candidates, s.llm_hidden, s.llm_ff, s.llm_heads
    if s.family == "t5":
        per_token = 10 * d + 12 * f
        prefix = e * (t_in * per_token + 6 * n * t_in**2)
        # cross- and self-attention keys/values per candidate row, and the encoder output repeated per row
        cache = s.llm_decoder_layers * 2 * rows * (t_in + t_out) * d * 2 + rows * t_in * d * 2
        layer = rows * (t_out * per_token + 6 * n * t_out * (t_out + t_in))
    else:
        per_token, t_prefix = 14 * d + 8 * f, t_in - t_out + 1
        t_all = t_prefix + t_out
        prefix = e * t_prefix * per_token + s.llm_layers * 2 * e * t_prefix * d * 2
        cache = s.llm_layers * 2 * rows * t_all * d * 2
        layer = rows * (t_out * per_token + 2 * n * t_out * t_all)
    logits = rows * t_out * s.vocab * 10
    qformer = e * (10 * s.qformer_heads * t_q**2 + t_q * 8 * s.qformer_hidden)
    return (max(prefix, cache + max(layer, logits)) + qformer) * (1 if m.compute_16bit else 2)


def estimate_memory(s: ModelShape, c: ParamCounts, m: MemorySetup) -> MemoryEstimate:
    """Peak bytes of a trial on ``m.device`` (module docstring: what is counted)."""
    frozen = c.total - c.trainable - (0 if m.vit_resident else c.vit)
    weights = frozen * DTYPE_BYTES[m.weight_dtype] + 4 * c.trainable
    adam, grads = 8 * c.trainable, 4 * c.trainable
    train = grads + adam + training_activation_bytes(s, c, m)
    score = adam + scoring_bytes(s, m)
    # writing a checkpoint: the last and best fp32 copies of what trains (host memory: on a GPU
    # they do not count), while gradients are already freed; its own phase, not an addition
    checkpoint = adam + (8 * c.trainable if m.device == "cpu" else 0)
    dynamic = max(train, score, checkpoint)
    if m.device == "cuda":
        overhead = CUDA_CONTEXT_BYTES + int(CUDA_ALLOCATOR_SLACK * (weights + dynamic))
    else:
        overhead = CPU_BASE_RSS_BYTES + int(CPU_MALLOC_SLACK * dynamic)
    return MemoryEstimate(weights_bytes=weights, optimizer_bytes=grads + adam,
                          activation_bytes=train - grads - adam, scoring_bytes=score - adam,
                          overhead_bytes=overhead, peak_bytes=weights + dynamic + overhead)


def plain_micro_batches(m: MemorySetup, effective_batch: int) -> list[int]:
    """Micro-batches tried without checkpointing, largest first: the recipe's down to 4
    (recomputation costs ~1/3 more compute, a smaller micro-batch costs little while it still
    fills the GPU). Placement plans packed trials at the last of them."""
    sizes = [b for b in range(m.batch_size, 0, -1) if effective_batch % b == 0]
    return [b for b in sizes if b >= min(4, m.batch_size)]


def _training_options(m: MemorySetup, effective_batch: int, mode: str) -> list[tuple[int, bool]]:
    """(micro-batch, checkpointing) in the order tried: plain_micro_batches first, then with
    checkpointing down to micro-batch 1."""
    if mode != "auto":
        return [(m.batch_size, mode == "on")]
    sizes = [b for b in range(m.batch_size, 0, -1) if effective_batch % b == 0]
    return [(b, False) for b in plain_micro_batches(m, effective_batch)] + [(b, True) for b in sizes]


def choose_fit(s: ModelShape, c: ParamCounts, m: MemorySetup, capacity_bytes: int,
               effective_batch: int, mode: str = "auto") -> Fit | None:
    """The first setting that fits ``capacity_bytes``: training options in
    ``_training_options`` order, then the largest eval batch (halving) that fits; ``mode``
    on/off fixes checkpointing and the batch sizes. None: nothing fits."""
    evals = [m.eval_batch_size]
    while mode == "auto" and evals[-1] > 1:
        evals.append(evals[-1] // 2)
    for batch, ckpt in _training_options(m, effective_batch, mode):
        trial = replace(m, batch_size=batch, activation_checkpointing=ckpt)
        for eval_batch in evals:
            est = estimate_memory(s, c, replace(trial, eval_batch_size=eval_batch))
            if est.fits(capacity_bytes):
                return Fit(batch, effective_batch // batch, eval_batch, ckpt, est)
    return None
