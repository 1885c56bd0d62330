"""What a sweep will run, validated before anything starts: the space, its targets and one
trial config per cell (``prepare``), and the dry run's plan at real size (``dry_run``).

Why apart from the run (orchestrator.driver.run): all of this reads and checks, writes nothing
and starts nothing (no Ray, no storage, no tracking), and the dry run, the placement
(orchestrator.placement.resources) and the run all start from its ``Prepared``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.driver import preflight
from orchestrator.driver.cluster import resolve_address as cluster_address
from orchestrator.driver.names import UnsafeName, check_name, default_name
from orchestrator.driver.options import SweepOptions
from orchestrator.driver.spaces import Space, load_space
from orchestrator.driver.targets import Targets, resolve_targets, trial_configs
from trainables.config import TrialConfig


class SweepError(ValueError):
    """A sweep that cannot start; the message names the culprit and the fix."""


@dataclass(frozen=True)
class Prepared:
    """What a sweep will run, fully validated (no Ray, no tracking yet)."""

    space: Space
    """The validated space (paper names)."""
    targets: Targets
    """What the paper's names stand for in this sweep."""
    trials: list[TrialConfig]
    """One resolved trial config per cell (flattened only at the Ray boundary, tuner.py)."""
    name: str
    """Run name: the experiment directory under --storage and the MLflow experiment."""
    epoch_budget: int
    """Largest resolved epoch budget over the trials (ASHA's max_t)."""
    asha: Any = None
    """orchestrator.driver.schedulers.AshaSettings of an ASHA sweep (validated here), else None."""


def prepare(options: SweepOptions) -> Prepared:
    """Space + targets + trial configs, validated (raises SpaceError/SweepError)."""
    space = load_space(options.space)
    targets = resolve_targets(list(options.llm), list(options.benchmark), list(options.data_root))
    extra = options.trial_overrides()
    cache_dir = str(Path(options.cache_dir).expanduser().resolve())
    trials = trial_configs(space, targets, cache_dir=cache_dir, extra=extra, seeds=options.seeds)
    if options.random_weights:
        trials = _with_random_weights(trials)
    budget = max(t.epochs for t in trials)
    if options.grace_period is not None and options.grace_period > budget:
        raise SweepError(f"--grace-period {options.grace_period} exceeds the epoch budget {budget}")
    asha = None
    if options.scheduler == "asha":
        from orchestrator.driver.schedulers import asha_settings
        longest = max(trials, key=lambda t: t.epochs)
        try:
            asha = asha_settings(budget, longest.llm, grace_period=options.grace_period,
                                 reduction_factor=options.reduction_factor,
                                 brackets=options.brackets, metric=options.rung_metric)
        except ValueError as err:
            raise SweepError(f"ASHA: {err}") from None
    try:  # the name becomes directories and an MLflow experiment: a name, never a path
        name = check_name(options.name) if options.name is not None else default_name(space.name)
        # Values no model or budget can take, duplicate cells, incomplete checkpoints.
        preflight.check_trials(trials, sources=not options.dry_run)
        if not options.dry_run and cluster_address(options.address) is None:
            preflight.check_local_resources(options.cpus_per_trial, options.fixed_gpus)
    except (UnsafeName, preflight.PreflightError) as err:
        raise SweepError(str(err)) from None
    return Prepared(space=space, targets=targets, trials=trials, name=name, epoch_budget=budget,
                    asha=asha)


def _with_random_weights(trials: list[TrialConfig]) -> list[TrialConfig]:
    """--random-weights: every trial of a real preset gets the random full-size build."""
    from trainables.vocab import REAL_PRESETS

    def real(t: TrialConfig) -> bool:
        return t.llm in REAL_PRESETS and t.model_path is None
    if not any(real(t) for t in trials):
        raise SweepError("--random-weights builds the real architectures: name one, e.g. "
                         "--llm flan-t5-xl=flan-t5-xl")
    return [dataclasses.replace(t, random_weights=True) if real(t) else t for t in trials]


def planned_trials(space: Space, options: SweepOptions) -> tuple[list, Any]:
    """The plan of ``space`` at real size as these options change it (epochs, ViT cache and
    augmentation, weight dtype, checkpointing), and the ViT-cache setting it was made with: what
    the dry run prints and what --gpus-per-trial auto places trials by."""
    from orchestrator.driver import plan, vit_savings
    overrides = {**space.overrides, **options.trial_overrides()}  # as in the trials
    setting = vit_savings.setting_from_overrides(overrides)
    return vit_savings.apply(plan.build_plan(space, overrides), setting), setting


def dry_run(prepared: Prepared, options: SweepOptions) -> int:
    """Print the plan at the real model sizes (meta device) and exit; Ray never starts."""
    from orchestrator.driver import plan, vit_savings
    if options.plan_out:
        try:
            preflight.check_output_path(options.plan_out, "--plan-out", directory=False)
        except preflight.PreflightError as err:
            raise SweepError(str(err)) from None
    trials, setting = planned_trials(prepared.space, options)
    print(plan.format_plan(trials))
    print(vit_savings.format_savings(trials, setting))
    from orchestrator.costs.estimate import dry_run_block
    from orchestrator.placement.resources import dry_run_node_types
    try:
        types = dry_run_node_types(options)
    except ValueError as err:  # NodeTypeError: a bad --cluster-config / --price
        raise SweepError(str(err)) from None
    print()
    print(dry_run_block(trials, prepared.space, types, options))
    if options.plan_out:
        plan.write_plan_json(trials, Path(options.plan_out))
        print(f"plan written to {options.plan_out}")
    return 0
