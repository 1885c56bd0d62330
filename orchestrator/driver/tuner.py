"""Building, running and restoring the Ray Tune Tuner of a sweep.

Why a module of its own: the grid phase and every retune run the same way (same trainable,
resources, storage, failure policy, reporter), and --resume must rebuild exactly what was
started. The grid's param space is an explicit list of cells: ``cell_index`` is grid-searched and
every trial-config key is picked from that cell, so each trial config stays the flat
TrialConfig dict (what the trial, the tracker and the summary all read) with one extra key.
"""
from __future__ import annotations

import importlib
import os
import pickle
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune
from ray.tune import CheckpointConfig, CLIReporter, FailureConfig, ProgressReporter, RunConfig

from orchestrator.driver.progress import ProgressLine
from trainables.config import TrialConfig

CELL_INDEX = "cell_index"
"""The one key a grid trial's config holds besides TrialConfig's (stripped before training)."""
LEGACY_MODULES: dict[str, str] = {
    "orchestrator.tuner": "orchestrator.driver.tuner",
    "orchestrator.schedulers": "orchestrator.driver.schedulers",
    "orchestrator.spaces": "orchestrator.driver.spaces",  # GroupedASHA's group_fn, group_of
    "orchestrator.mlflow_runs": "orchestrator.tracking.mlflow_runs",
}
"""Where the classes an experiment pickles (the namer, the sample_from picks, the scheduler, the
tracking callback) lived before orchestrator/ was split into parts: restoring an experiment
started then unpickles them by these names."""
TUNER_PKL = "tuner.pkl"
"""Tune's own record of a Tuner in the experiment directory (ray.tune.impl.tuner_internal)."""
EXPERIMENT_STATE_PERIOD_S = "1"
"""Seconds between experiment-state snapshots: a SIGKILLed sweep loses at most ~1 s of it."""


def run_cell(config: dict[str, Any]) -> None:
    """The Ray Tune function trainable of every sweep trial: a flat TrialConfig dict -> one trial."""
    from trainables.tune_fn import train_trial  # imported in the worker: keeps the driver light
    train_trial(trial_config(config))


def cell_trainable(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """Wrap another function trainable (--trainable) so that it, too, gets the clean config."""
    if fn is run_cell:
        return fn

    def cell_trial(config: dict[str, Any]) -> None:
        fn(trial_config(config))

    return cell_trial


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's trial config minus the orchestration-only key: exactly what TrialConfig accepts."""
    return {k: v for k, v in config.items() if k != CELL_INDEX}


class _Pick:
    """sample_from callable: the value of ``key`` in the grid's cell ``cell_index`` (picklable)."""

    def __init__(self, configs: list[dict[str, Any]], key: str) -> None:
        self.configs, self.key = configs, key

    def __call__(self, config: dict[str, Any]) -> Any:
        return self.configs[config[CELL_INDEX]].get(self.key)


def grid_param_space(trials: list[TrialConfig]) -> dict[str, Any]:
    """An explicit grid: exactly one trial per config, in order, with flat config keys (the Ray
    boundary: the typed configs become the flat dicts a function trainable receives)."""
    configs = [t.to_dict() for t in trials]
    keys = sorted({k for c in configs for k in c})
    space: dict[str, Any] = {CELL_INDEX: tune.grid_search(list(range(len(configs))))}
    space.update({k: tune.sample_from(_Pick(configs, k)) for k in keys})
    return space


class TrialNamer:
    """Readable, file-system-safe trial names: the cell id (plus the lr of a retune trial).

    Tune names a trial before it resolves the grid's sample_from values, so the cell is looked
    up by its (already resolved) cell_index in ``trials``; retune configs are plain values.
    """

    def __init__(self, trials: list[TrialConfig] | None = None) -> None:
        self.trials = trials or []

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Tune pickles the namer with the experiment; one pickled before the grid became
        # TrialConfigs (the sweeps before adapters) holds the flat config dicts as "configs".
        if "configs" in state:
            state = {"trials": [TrialConfig.from_dict(trial_config(c)) for c in state["configs"]]}
        self.__dict__.update(state)

    def name(self, trial: Any) -> str:
        c = trial.config
        if CELL_INDEX in c and self.trials:
            return self.trials[c[CELL_INDEX]].cell_id
        name = TrialConfig.from_dict(trial_config(c)).cell_id
        if c.get("retune_of") and isinstance(c.get("lr"), float):
            name += f"|lr={c['lr']:.2g}"
        return name

    def dirname(self, trial: Any) -> str:
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.name(trial))[:100] + f"_{trial.trial_id}"


@dataclass(frozen=True)
class TunerSettings:
    """How trials run; shared by the grid phase and the retunes."""

    storage: str
    """Absolute local directory or a URI pyarrow.fs understands (s3://, gs://, file://)."""
    cpus_per_trial: float = 1.0
    """CPUs reserved per trial."""
    gpus_per_trial: float = 0.0
    """GPUs per trial; fractional values pack several small trials on one GPU."""
    resources: Callable[[dict[str, Any]], Any] | None = None
    """Per-trial resources (orchestrator.placement.resources.TrialResources: each cell's GPU share and
    node type); None: cpus_per_trial / gpus_per_trial for every trial."""
    max_concurrent: int = 2
    """At most this many trials at once (default: the machine's CPU count)."""
    max_failures: int = 2
    """Retries of a failing trial (from its last checkpoint) before it counts as errored."""
    callbacks: list = field(default_factory=list)
    """Tune callbacks (the MLflow trial logger)."""
    verbose: int = 1
    """Tune verbosity: 0 silent, 1 progress reports."""
    full_table: bool = False
    """Tune's full status table instead of the compact progress line (--verbose)."""

    def __post_init__(self) -> None:
        if self.cpus_per_trial <= 0:
            raise ValueError(f"cpus_per_trial must be > 0, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise ValueError(f"gpus_per_trial must be >= 0, got {self.gpus_per_trial}")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise ValueError(f"gpus_per_trial above 1 must be whole, got {self.gpus_per_trial}")
        if self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {self.max_concurrent}")

    def request(self, config: dict[str, Any]) -> dict[str, float]:
        """The Ray resources one trial of ``config`` holds ({"CPU", "GPU", custom...}): what a
        task doing that trial's work (scoring a stopped trial) must ask for too."""
        if self.resources is not None and hasattr(self.resources, "request"):
            return dict(self.resources.request(config))
        return {"CPU": self.cpus_per_trial, "GPU": self.gpus_per_trial}


def reporter(full_table: bool = False) -> ProgressReporter:
    """One compact progress line (orchestrator.driver.progress); --verbose: Tune's table, every 30 s."""
    if not full_table:
        return ProgressLine()
    return CLIReporter(
        metric_columns={"epoch": "ep", "best_val_acc": "best val", "train_loss": "loss"},
        parameter_columns={"method": "method", "sublayer": "sub", "rank": "r"},
        max_report_frequency=30, max_progress_rows=12, max_error_rows=5, sort_by_metric=False)


def run_config(name: str, settings: TunerSettings) -> RunConfig:
    """Storage, retries, checkpoint retention and reporting of one experiment."""
    return RunConfig(
        name=name, storage_path=settings.storage,
        failure_config=FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=1),
        callbacks=list(settings.callbacks), progress_reporter=reporter(settings.full_table),
        verbose=settings.verbose, log_to_file=True)


def with_resources(trainable: Callable, settings: TunerSettings) -> Any:
    if settings.resources is not None:
        return tune.with_resources(trainable, settings.resources)
    return tune.with_resources(trainable, {"cpu": settings.cpus_per_trial,
                                           "gpu": settings.gpus_per_trial})


def experiment_path(storage: str, name: str) -> str:
    """Where Tune keeps the experiment (what Tuner.restore takes)."""
    return storage.rstrip("/") + "/" + name


def build_tuner(trainable: Callable, param_space: dict[str, Any], name: str,
                settings: TunerSettings, scheduler: Any, *, search_alg: Any = None,
                num_samples: int = 1, trials: list[TrialConfig] | None = None) -> tune.Tuner:
    """A fresh Tuner (the caller decided there is nothing to restore); ``trials``: the grid's."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_STATE_PERIOD_S)
    namer = TrialNamer(trials)
    tune_config = tune.TuneConfig(
        scheduler=scheduler, search_alg=search_alg, num_samples=num_samples,
        max_concurrent_trials=settings.max_concurrent, reuse_actors=True,
        trial_name_creator=namer.name, trial_dirname_creator=namer.dirname)
    return tune.Tuner(with_resources(cell_trainable(trainable), settings), param_space=param_space,
                      tune_config=tune_config, run_config=run_config(name, settings))


def alias_legacy_modules() -> None:
    """Make LEGACY_MODULES importable by their old names (only restoring needs this)."""
    for old, new in LEGACY_MODULES.items():
        sys.modules.setdefault(old, importlib.import_module(new))


def started_param_keys(storage: str, name: str) -> set[str] | None:
    """The top-level param-space keys the experiment was started with (Tune keeps only their
    flattened names in tuner.pkl, not the space); None when tuner.pkl does not say."""
    path = experiment_path(storage, name) + "/" + TUNER_PKL
    fs, fs_path = pyarrow.fs.FileSystem.from_uri(path) if "://" in path else \
        (pyarrow.fs.LocalFileSystem(), path)
    alias_legacy_modules()
    with fs.open_input_stream(fs_path) as f:
        state = pickle.loads(f.read())  # noqa: S301 -- Tune unpickles this very file to restore
    keys = state.get("__flattened_param_space_keys") if isinstance(state, dict) else None
    return None if keys is None else {k.split("/")[0] for k in keys}


def fit_param_space(param_space: dict[str, Any], keys: set[str] | None) -> dict[str, Any]:
    """``param_space`` with exactly the experiment's top-level ``keys``: a key this version has
    and the experiment did not is left out, one it had and this version lacks is None (the trial
    config's default). Tune accepts a re-specified space only with the same keys."""
    if keys is None:
        return param_space
    return {k: param_space.get(k) for k in sorted(keys)}


def restore_tuner(trainable: Callable, name: str, settings: TunerSettings,
                  scheduler: Any = None, param_space: dict[str, Any] | None = None) -> tune.Tuner:
    """Continue an interrupted experiment: finished trials stay finished, unfinished ones resume
    from their last checkpoint, errored ones resume too (they get their retries again).

    ``param_space`` (this sweep's, as ``build_tuner`` got it) must be given again: Tune pickles
    only its key names, and without it the grid's ``sample_from`` values of trials not yet
    started stay unresolved placeholders (measured: "rank must be an integer, got ('__fn_ph',
    ...)"). It is fitted to the keys the experiment started with (``fit_param_space``), so a
    sweep started by an earlier version of this code, with other config keys (e.g. none for
    the adapter), resumes too: its trials parse into the same cells (trainables.cell: the
    paper's plain LoRA keeps its id). ``scheduler`` replaces the one pickled at the start,
    whose rung records are empty (orchestrator.driver.scheduler_state)."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_STATE_PERIOD_S)
    alias_legacy_modules()
    if param_space is not None:
        param_space = fit_param_space(param_space, started_param_keys(settings.storage, name))
    tuner = tune.Tuner.restore(experiment_path(settings.storage, name),
                               trainable=with_resources(cell_trainable(trainable), settings),
                               param_space=param_space,
                               resume_unfinished=True, resume_errored=True, restart_errored=False)
    # Tune restores the run config from tuner.pkl; this sweep's callbacks (a tracker attached to
    # the existing parent run, maybe at another --tracking-uri) and reporter replace the pickled
    # ones. Private API: Ray 2.60 has no public way to replace a restored run config
    # (ray-project/ray#41364, open); test_resume fails if this attribute goes away.
    config = tuner._local_tuner.get_run_config()
    config.callbacks = list(settings.callbacks)
    config.progress_reporter = reporter(settings.full_table)
    if scheduler is not None:  # Tune has no public setter; restore reads _tune_config.scheduler
        tuner._local_tuner._tune_config.scheduler = scheduler
    return tuner


def can_restore(storage: str, name: str) -> bool:
    return tune.Tuner.can_restore(experiment_path(storage, name))


def check_storage(storage: str) -> str:
    """Make a local path absolute and prove the storage writable (create + delete a probe).

    Raises ValueError naming the path and the cause; runs before Ray starts.
    """
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(storage) if "://" in storage else \
            (pyarrow.fs.LocalFileSystem(), storage)
        fs.create_dir(path, recursive=True)
        probe = path.rstrip("/") + "/.sweep-write-probe"
        with fs.open_output_stream(probe) as out:
            out.write(b"ok")
        fs.delete_file(probe)
    except Exception as err:  # pyarrow raises OSError/ArrowInvalid/... depending on the scheme
        raise ValueError(f"storage path {storage!r} is not writable: {err}") from None
    return storage
