"""TrialConfig: the one typed, frozen description of a trial, parsed once from Ray's flat dict.

Why: Ray Tune hands a trainable a flat ``dict``; a typo in a key or a method/sublayer mismatch
would otherwise surface minutes later deep inside training, or never. ``TrialConfig.from_dict``
rejects unknown keys (naming the allowed ones) and ``__post_init__`` rejects contradictions,
before any model is built. ``None`` means "the preset's default" and is resolved here from
``trainables.defaults`` so that everything downstream sees concrete values.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from trainables import defaults
from trainables.cell import Cell
from trainables.methods import (
    ADAPTERS,
    ALPHA_RULES,
    PAPER_ADAPTER,
    PAPER_ALPHA,
    PeftSetup,
    method_spec,
)
from trainables.pretrained import INITS
from trainables.vocab import BENCHMARKS, PRESETS, REAL_BENCHMARKS, REAL_PRESETS, check_choice

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
WEIGHT_DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp32")
CHECKPOINTING: tuple[str, ...] = ("auto", "on", "off")


@dataclass(frozen=True)
class TrialConfig:
    """One trial of the sweep; every field is also a key of the flat Ray config dict."""

    method: str
    """Row of the paper's table: baseline | llm_lora | qformer_lora | both_lora."""
    sublayer: str | None = None
    """Sublayers LoRA targets (valid values depend on method); None: "none" for baseline, "all" for both_lora."""
    rank: int | None = None
    """LoRA rank (paper: 1/2/4/8); the baseline's is 0 (None resolves to 0 for it)."""
    adapter: str = PAPER_ADAPTER
    """LoRA variant (trainables.methods.ADAPTERS: lora | dora | rslora | pissa)."""
    alpha: str = PAPER_ALPHA
    """lora_alpha rule (trainables.methods.ALPHA_RULES): fixed8 (the paper) | 2r."""
    llm: str = "tiny-t5"
    """Model preset (trainables.vocab.PRESETS)."""
    model_path: str | None = None
    """Local checkpoint dir for a real preset (otherwise the HF cache is used)."""
    init: str | None = None
    """Base weights: pretrained | random; None: defaults.default_init(llm) (tiny presets: the
    shipped pretrained weights, trainables.pretrained)."""
    benchmark: str = "synth-scienceqa"
    """Benchmark (trainables.vocab.BENCHMARKS); the real ones need data_root."""
    data_root: str | None = None
    """Root of the official benchmark files (real benchmarks only)."""
    cache_dir: str | None = None
    """Where prepared Parquet lives; None: defaults.PREPARED_CACHE_DIR."""
    lr: float | None = None
    """Initial learning rate; None: defaults.default_lr(method, llm)."""
    epochs: int | None = None
    """Maximum epochs; also the max_epoch of the linear decay. None: the preset's recipe."""
    batch_size: int | None = None
    """Micro-batch size; None: the preset's recipe."""
    grad_accum: int | None = None
    """Gradient-accumulation steps per optimizer step; None: the preset's recipe."""
    eval_batch_size: int | None = None
    """Problems scored together by the batched scorer; None: the preset's recipe."""
    patience: int | None = None
    """Early-stopping patience in epochs; None: the preset's recipe."""
    min_epochs: int | None = None
    """Early stopping never fires before this many epochs; None: the preset's recipe."""
    weight_decay: float | None = None
    """AdamW weight decay on >= 2-D tensors; None: the preset's recipe."""
    max_prompt_tokens: int | None = None
    """Cap on prompt tokens (LLM and Q-Former text, image tokens excluded); None: the recipe."""
    augment: bool | None = None
    """Random resized crop + flip in training; None: the preset's recipe."""
    dropout: float | None = None
    """Probability of every dropout in the model while fine-tuning (Q-Former, LLM, ViT; LoRA's
    own dropout is trainables.peft_targeting's); None: the preset's recipe, and where that is
    None too, the rates of the model's own config (the paper's)."""
    vit_cache: bool | None = None
    """Serve frozen-ViT features from the node's cache (trainables.vision_features): always for
    val/test scoring, and for training when augment is off; None: defaults.VIT_CACHE."""
    vit_cache_dir: str | None = None
    """Node-local directory of that cache; None: ``<cache_dir>/vit-features``."""
    vit_cache_max_gb: float | None = None
    """Size bound of the node's cache in GiB (least recently used entries are evicted); None:
    defaults.VIT_CACHE_MAX_GB."""
    precision: str = "auto"
    """Autocast: auto (the weight dtype when it is bf16/fp16; fp32 weights: bf16 on CUDA when
    supported, else fp32) | fp32 | bf16 | fp16."""
    weight_dtype: str | None = None
    """Storage dtype of the frozen weights: bf16 | fp16 (GPUs without bf16) | fp32; trainable
    tensors are fp32 masters regardless. None: the preset's recipe (real: bf16, toys: fp32)."""
    activation_checkpointing: str = "auto"
    """on | off | auto: recompute layer activations in backward. auto: on, and the micro-batch
    shrunk (effective batch kept), only as far as trainables.memory says the device needs."""
    random_weights: bool = False
    """Real presets only: the full-size architecture with deterministic random weights and
    stand-in tokenizers, no download (real-size memory/speed checks; accuracies meaningless)."""
    text_layers: int | None = None
    """random_weights only: the LLM at full width with this many layers (T5: encoder and decoder
    each), for CPU checks on machines without the memory for all of them. None: all."""
    seed: int = 0
    """Seeds model init, data order, augmentation and dropout."""
    max_train_examples: int | None = None
    """Use only the first N training problems (None: all)."""
    max_eval_examples: int | None = None
    """Use only the first N val and test problems each (None: all)."""
    num_threads: int | None = None
    """torch intra-op threads; None: defaults.NUM_THREADS."""
    divergence_factor: float | None = None
    """Loss blow-up factor of the divergence rule; None: defaults.DIVERGENCE_FACTOR."""
    retune_of: str | None = None
    """Cell id this trial re-tunes (a diverged cell re-run at a smaller lr), or None."""

    def __post_init__(self) -> None:
        self._check_types()
        self._resolve_defaults()
        self._check_contradictions()

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrialConfig:
        """Parse Ray's flat config dict; unknown keys raise one error naming the allowed keys."""
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(config) - set(allowed))
        if unknown:
            raise ValueError(f"unknown trial config key(s) {unknown}; allowed: {', '.join(allowed)}")
        if "method" not in config:
            raise ValueError("trial config needs 'method'")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as a flat dict (from_dict(to_dict()) round-trips)."""
        return dataclasses.asdict(self)

    @property
    def peft(self) -> PeftSetup:
        """What this trial adapts and how (method, sublayer, rank, adapter, alpha rule)."""
        return PeftSetup(self.method, self.sublayer, self.rank, self.adapter, self.alpha)

    @property
    def cell(self) -> Cell:
        """The cell this trial belongs to (trainables.cell)."""
        return Cell(self.benchmark, self.llm, self.peft)

    @property
    def cell_id(self) -> str:
        return self.cell.id

    @property
    def effective_batch(self) -> int:
        """Problems per optimizer step."""
        return int(self.batch_size) * int(self.grad_accum)

    def _check_types(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"trial config {name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"trial config {name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in _STR_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"trial config {name} must be a string, got {value!r}")
        for name in ("augment", "vit_cache", "random_weights"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"trial config {name} must be true or false, got {value!r}")

    def _resolve_defaults(self) -> None:
        """Fill every None that means "preset default" from trainables.defaults."""
        method = method_spec(self.method)
        check_choice("llm", self.llm, PRESETS)
        check_choice("adapter", self.adapter, tuple(ADAPTERS))
        check_choice("alpha rule", self.alpha, tuple(ALPHA_RULES))
        recipe = defaults.recipe_for(self.llm)
        fill = {
            "sublayer": method.default_sublayer,
            "rank": None if method.has_lora else 0,
            "cache_dir": defaults.PREPARED_CACHE_DIR, "init": defaults.default_init(self.llm),
            "lr": defaults.default_lr(self.method, self.llm),
            "epochs": recipe.epochs, "batch_size": recipe.batch_size,
            "grad_accum": recipe.grad_accum, "eval_batch_size": recipe.eval_batch_size,
            "patience": recipe.patience,
            "weight_decay": recipe.weight_decay, "max_prompt_tokens": recipe.max_prompt_tokens,
            "augment": recipe.augment, "dropout": recipe.dropout, "num_threads": defaults.NUM_THREADS,
            "weight_dtype": recipe.weight_dtype,
            "divergence_factor": defaults.DIVERGENCE_FACTOR,
            "vit_cache": defaults.VIT_CACHE, "vit_cache_max_gb": defaults.VIT_CACHE_MAX_GB,
        }
        for name, value in fill.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.vit_cache_dir is None:
            object.__setattr__(self, "vit_cache_dir", str(Path(self.cache_dir) / defaults.VIT_CACHE_SUBDIR))
        if self.min_epochs is None:  # a shortened run keeps a consistent default
            object.__setattr__(self, "min_epochs", min(recipe.min_epochs, self.epochs))
        if self.sublayer is None:
            raise ValueError(f"trial config needs a sublayer for method {self.method!r}; "
                             f"allowed: {', '.join(method.sublayers)}")
        if self.rank is None:
            raise ValueError(f"trial config needs a rank for method {self.method!r} (paper: 1, 2, 4, 8)")

    def _check_contradictions(self) -> None:
        self.peft.check()  # sublayer of the method, rank, LoRA options only where LoRA is
        check_choice("benchmark", self.benchmark, BENCHMARKS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("init", self.init, INITS)
        check_choice("weight_dtype", self.weight_dtype, WEIGHT_DTYPES)
        check_choice("activation_checkpointing", self.activation_checkpointing, CHECKPOINTING)
        self._check_dtypes()
        if self.benchmark in REAL_BENCHMARKS and self.data_root is None:
            raise ValueError(f"benchmark {self.benchmark!r} needs data_root (the official files)")
        if self.text_layers is not None and not self.random_weights:
            raise ValueError("text_layers only applies with random_weights (a checkpoint has its own depth)")
        if self.random_weights and (self.llm not in REAL_PRESETS or self.model_path is not None):
            raise ValueError(f"random_weights needs a real preset ({', '.join(REAL_PRESETS)}) and no "
                             f"model_path, got llm={self.llm!r}")
        if self.model_path is not None and self.llm not in REAL_PRESETS:
            raise ValueError(f"model_path is only valid with a real preset "
                             f"({', '.join(REAL_PRESETS)}), not llm={self.llm!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.vit_cache_max_gb > 0:
            raise ValueError(f"vit_cache_max_gb must be > 0, got {self.vit_cache_max_gb}")
        if self.divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1, got {self.divergence_factor}")
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size", "max_prompt_tokens",
                     "num_threads", "min_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_epochs > self.epochs:
            raise ValueError(f"min_epochs ({self.min_epochs}) exceeds epochs ({self.epochs})")
        for name in ("max_train_examples", "max_eval_examples", "text_layers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")

    def _check_dtypes(self) -> None:
        """Half-precision frozen weights cannot run fp32 compute, nor the other half format."""
        if self.weight_dtype == "fp32" or self.precision == "auto":
            return
        if self.precision != self.weight_dtype:
            raise ValueError(f"precision {self.precision!r} contradicts weight_dtype "
                             f"{self.weight_dtype!r}: frozen {self.weight_dtype} weights compute in "
                             f"{self.weight_dtype} (use precision auto, or weight_dtype fp32)")


_INT_FIELDS = ("rank", "epochs", "batch_size", "grad_accum", "eval_batch_size", "patience",
               "min_epochs", "max_prompt_tokens", "seed", "max_train_examples",
               "max_eval_examples", "num_threads", "text_layers")
_FLOAT_FIELDS = ("lr", "weight_decay", "divergence_factor", "vit_cache_max_gb", "dropout")
_STR_FIELDS = ("method", "sublayer", "adapter", "alpha", "llm", "model_path", "init", "benchmark", "data_root",
               "cache_dir", "vit_cache_dir", "precision", "retune_of", "weight_dtype", "activation_checkpointing")
