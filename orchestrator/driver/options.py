"""SweepOptions: the sweep command's options, typed, checked once, passed instead of a Namespace.

Why: the driver, the tracker and the retunes read options by attribute; a frozen dataclass
makes every option's type and default visible in one place, and ``__post_init__`` rejects
contradictions before anything starts (the CLI turns the error into "sweep: error: ..." and
exit code 2). ``from_namespace`` fails loudly when the parser and this class disagree, so an
option cannot be added to one and forgotten in the other.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from trainables import defaults
from trainables.excerpt import excerpt

AUGMENT_CHOICES: tuple[str, ...] = ("on", "off")
"""--augment's values (the parser's choices)."""
_TRIAL_KEYS: tuple[str, ...] = ("seed", "epochs", "weight_dtype", "activation_checkpointing")
"""Options that are trial config keys of the same name and value."""


class OptionError(ValueError):
    """Contradictory or out-of-range sweep options; the message names the option."""


@dataclass(frozen=True)
class SweepOptions:
    """Every option of ``python -m orchestrator.sweep`` (see its --help for the meanings).
    The field defaults are the command line's: the parser reads them from here."""

    space: str
    llm: tuple[str, ...] = ()
    benchmark: tuple[str, ...] = ()
    data_root: tuple[str, ...] = ()
    epochs: int | None = None
    seed: int | None = None
    seeds: int | None = None
    """Trials per cell (seed, seed + 1, ...); None: the space's ``seeds`` (default 1)."""
    cache_dir: str = defaults.PREPARED_CACHE_DIR
    augment: str | None = None
    """on | off | None (the recipe's)."""
    scheduler: str = "asha"
    grace_period: int | None = None
    reduction_factor: float | None = None
    brackets: int | None = None
    rung_metric: str | None = None
    """ASHA's rung metric (trainables.defaults.RUNG_METRICS); None: the recipe's."""
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | str | None = None
    """"auto" (placement by planned memory), a number of GPUs, or None: auto when a trial runs a
    real preset, else 0 (orchestrator.placement.resources)."""
    cluster_config: str | None = None
    price: tuple[str, ...] = ()
    cpu: bool = False
    """Real presets may run on CPU (without it they need a GPU per trial)."""
    weight_dtype: str | None = None
    activation_checkpointing: str | None = None
    random_weights: bool = False
    address: str | None = None
    max_failures: int = 2
    no_vit_cache: bool = False
    vit_cache_dir: str | None = None
    vit_cache_max_gb: float | None = None
    storage: str = "ray_results"
    """Tune storage (relative: the working directory)."""
    name: str | None = None
    tracking_uri: str | None = None
    report_dir: str | None = None
    resume: bool = False
    dry_run: bool = False
    plan_out: str | None = None
    verbose: bool = False
    """Ray Tune's full table and the workers' logs instead of the progress line."""
    node_type: str | None = None
    makespan_gpus: int = 8
    no_retune: bool = False
    retune_samples: int | None = None
    trainable: str | None = None
    argv: tuple[str, ...] = ()
    """The command line as given (recorded with the sweep's MLflow parent run)."""

    def __post_init__(self) -> None:
        self._check_modes()
        for opt in ("epochs", "max_concurrent", "retune_samples", "grace_period", "brackets",
                    "seeds"):
            value = getattr(self, opt)
            if value is not None and value < 1:
                raise OptionError(f"--{_flag(opt)} must be >= 1, got {value}")
        if self.reduction_factor is not None and not 1 < self.reduction_factor < math.inf:
            raise OptionError(f"--reduction-factor must be a number > 1, got "
                              f"{self.reduction_factor}")
        if self.cpu and self.gpus_per_trial not in (None, 0):
            raise OptionError(f"--cpu contradicts --gpus-per-trial {self.gpus_per_trial}")
        if not 0 < self.cpus_per_trial < math.inf:
            raise OptionError(f"--cpus-per-trial must be a number > 0, got {self.cpus_per_trial}")
        if self.gpus_per_trial not in ("auto", None) and not 0 <= self.gpus_per_trial < math.inf:
            raise OptionError(f"--gpus-per-trial must be auto or a number >= 0, got "
                              f"{self.gpus_per_trial}")
        if self.makespan_gpus < 1:
            raise OptionError(f"--makespan-gpus must be >= 1, got {self.makespan_gpus}")
        if self.max_failures < 0:
            raise OptionError(f"--max-failures must be >= 0, got {self.max_failures}")
        if self.no_vit_cache and (self.vit_cache_dir or self.vit_cache_max_gb is not None):
            raise OptionError("--vit-cache-dir/--vit-cache-max-gb contradict --no-vit-cache")
        if self.vit_cache_max_gb is not None and not 0 < self.vit_cache_max_gb < math.inf:
            raise OptionError(f"--vit-cache-max-gb must be > 0, got {self.vit_cache_max_gb}")
        if self.augment not in (None, *AUGMENT_CHOICES):
            raise OptionError(f"--augment must be one of {', '.join(AUGMENT_CHOICES)}, got {excerpt(self.augment)}")

    def _check_modes(self) -> None:
        if self.resume and self.dry_run:
            raise OptionError("--resume and --dry-run contradict each other (a dry run starts "
                              "nothing)")
        for opt in ("plan_out", "node_type"):
            if getattr(self, opt) and not self.dry_run:
                raise OptionError(f"--{_flag(opt)} needs --dry-run")
        if self.scheduler == "fifo":
            for opt in ("grace_period", "reduction_factor", "brackets", "rung_metric"):
                if getattr(self, opt) is not None:
                    raise OptionError(f"--{_flag(opt)} only applies to --scheduler asha")
        if self.no_retune and self.retune_samples is not None:
            raise OptionError("--retune-samples contradicts --no-retune")

    def trial_overrides(self) -> dict[str, Any]:
        """The trial config keys the command line sets (only those given): they win over the
        space's overrides, in the trials (driver.prepare) and in the dry-run plan alike."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _TRIAL_KEYS if getattr(self, k) is not None}
        if self.augment is not None:
            out["augment"] = self.augment == "on"
        if self.no_vit_cache:
            out["vit_cache"] = False
        if self.vit_cache_dir:
            out["vit_cache_dir"] = str(Path(self.vit_cache_dir).expanduser().resolve())
        if self.vit_cache_max_gb is not None:
            out["vit_cache_max_gb"] = self.vit_cache_max_gb
        return out

    @property
    def requested_gpus(self) -> float | str | None:
        """--gpus-per-trial as placement takes it: --cpu means 0 GPUs."""
        return 0.0 if self.cpu else self.gpus_per_trial

    @property
    def fixed_gpus(self) -> float:
        """The explicit --gpus-per-trial number; 0 for auto or unset (auto shares are at most
        one GPU each and are checked against the node types by orchestrator.placement)."""
        gpus = self.requested_gpus
        return 0.0 if gpus in (None, "auto") else float(gpus)

    @property
    def run_seed(self) -> int:
        """The seed of the retune sampler and the parent run (default 0)."""
        return self.seed or 0

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace, argv: list[str]) -> SweepOptions:
        """The parsed command line; raises OptionError on a contradiction."""
        given = vars(ns)
        names = {f.name for f in fields(cls)} - {"argv"}
        if set(given) != names:
            raise RuntimeError(f"sweep parser and SweepOptions disagree on "
                               f"{sorted(set(given) ^ names)}")  # a programming error
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in given.items()}
        return cls(**values, argv=tuple(argv))


def _flag(name: str) -> str:
    return name.replace("_", "-")
