"""--dry-run: what the frozen-ViT feature cache saves on a space at real model sizes.

Why: the cache (trainables.vision_features) only pays where trials see the same images again;
a user deciding how to run the grid (and whether to train without augmentation) wants its
effect in FLOPs and GPU-hours before renting GPUs.

Counted per trial, in orchestrator.driver.plan's conventions (one ViT forward = 2 x N_vit x 257 FLOPs per
image, N_vit = the ViT weights the tokens pass through; equal to torch's count for ViT-g/14,
benchmarks.flop_split):
- uses: images whose ViT features the trial needs, at the recipe's full epoch budget: every
  epoch's val problems, the test problems once, and every epoch's training problems when
  augmentation is off (random crops give new pixels every epoch: nothing to reuse);
- without the cache each use runs the ViT; with it each distinct image runs once per node for all
  trials with the same vision weights. The planner counts one node and one set of ViT weights per
  LLM checkpoint (whether both InstructBLIP checkpoints ship bit-identical ViTs is not known
  offline; if they do, the cache shares them and saves a little more). Each further node computes
  every image once more; early stopping and ASHA shorten trials, which scales uses (and savings)
  down, never the fill.
- GPU-hours at GPU_PEAK_FLOPS x UTILISATION (one A100's dense bf16 peak at 40% utilisation).
Memory: a trial that reads every image from the cache (cache on, augmentation off) releases the
ViT trunk after filling it, so its GPU estimate and fits are recomputed without the trunk's
weights (orchestrator.driver.plan.with_vit_resident: ~1.9 GiB for ViT-g in bf16); with augmentation on
(the paper's recipe) the trunk stays.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.driver import plan as plan_mod
from trainables import defaults
from trainables.excerpt import excerpt

SPLIT_PROBLEMS: dict[str, dict[str, int]] = {
    "scienceqa": {"train": 6218, "val": 2097, "test": 2017},
    "iconqa": {"train": 18946, "val": 6316, "test": 6316},
}
"""Problems (= images) per split of the real benchmarks (paper appendix B)."""
GPU_PEAK_FLOPS = 312e12
"""A100 dense bf16 peak, FLOP/s."""
UTILISATION = 0.4
"""Share of the peak a training/scoring step reaches (model FLOPs utilisation)."""


@dataclass(frozen=True)
class CacheSetting:
    """How the trials of a space use the cache: the space's overrides with the command line's
    (setting_from_overrides), at the real models' recipe for what neither sets."""

    enabled: bool
    augment: bool | None
    """None: the recipe's (paper: on)."""
    epochs: int | None
    """None: the recipe's (paper: 15)."""

    def __post_init__(self) -> None:
        for name, value in (("vit_cache", self.enabled), ("augment", self.augment)):
            if not isinstance(value, bool) and not (value is None and name == "augment"):
                raise ValueError(f"{name} must be true or false, got {excerpt(value)}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise ValueError(f"epochs must be an integer >= 1, got {excerpt(self.epochs)}")


def setting_from_overrides(overrides: dict[str, Any]) -> CacheSetting:
    """The cache setting of a space's trials from its merged overrides (space, then CLI); not
    from the stand-ins' resolved configs: the plan is at the real models' recipe. A key the
    overrides leave out takes its default (defaults.VIT_CACHE; the recipe's augment/epochs);
    a value of the wrong type raises ValueError naming the key."""
    enabled = overrides.get("vit_cache")
    return CacheSetting(enabled=defaults.VIT_CACHE if enabled is None else enabled,
                        augment=overrides.get("augment"), epochs=overrides.get("epochs"))


def uses(benchmark: str, epochs: int, augment: bool) -> int:
    """ViT feature uses of one trial run to its full epoch budget."""
    n = SPLIT_PROBLEMS[benchmark]
    return epochs * (n["val"] + (0 if augment else n["train"])) + n["test"]


def _resolved(trial: Any, setting: CacheSetting) -> tuple[int, bool]:
    recipe = defaults.recipe_for(trial.llm)
    epochs = setting.epochs if setting.epochs is not None else recipe.epochs
    augment = setting.augment if setting.augment is not None else recipe.augment
    return int(epochs), bool(augment)


def _saved(trial: Any, epochs: int, augment: bool, group: int) -> float:
    """ViT FLOPs the cache saves one trial: its uses minus its share of the group's one-off fill."""
    n = SPLIT_PROBLEMS[trial.benchmark]
    images = n["val"] + n["test"] + (0 if augment else n["train"])
    return (uses(trial.benchmark, epochs, augment) - images / group) * trial.vit_flops_per_image


def _groups(plan: Sequence[Any]) -> Counter:
    """Trials sharing one node's cache entries: same LLM checkpoint (ViT weights), same benchmark."""
    return Counter((t.llm, t.benchmark) for t in plan)


def apply(plan: Sequence[Any], setting: CacheSetting) -> list[Any]:
    """The plan's trials with ``vit_cache_flops_saved`` and, where the trunk is released, the GPU
    memory without it (module docstring)."""
    if not setting.enabled:  # build_plan's trials keep the trunk: nothing to refit
        return [dataclasses.replace(t, vit_resident=True, vit_cache_flops_saved=0) for t in plan]
    groups, out = _groups(plan), []
    for trial in plan:
        epochs, augment = _resolved(trial, setting)
        saved = _saved(trial, epochs, augment, groups[(trial.llm, trial.benchmark)])
        if not augment:  # every image is cached: memory and fits without the trunk
            trial = plan_mod.with_vit_resident(trial, False)
        out.append(dataclasses.replace(trial, vit_cache_flops_saved=int(saved)))
    return out


def gpu_hours(flops: float) -> float:
    return flops / (GPU_PEAK_FLOPS * UTILISATION) / 3600


def format_savings(plan: Sequence[Any], setting: CacheSetting) -> str:
    """The dry run's cache lines: what it saves as configured and, if training augments, what
    training without augmentation would add."""
    if not setting.enabled:
        return "ViT feature cache: off (--no-vit-cache); every trial runs the ViT on every image it sees."
    saved = sum(t.vit_cache_flops_saved for t in plan)
    # what the ViT would run without the cache: every image of every epoch, augmented ones included
    vit_all = sum(uses(t.benchmark, _resolved(t, setting)[0], False) * t.vit_flops_per_image for t in plan)
    released = sum(not t.vit_resident for t in plan)
    lines = [f"ViT feature cache: saves {saved / 1e18:.1f} of the {vit_all / 1e18:.1f} EFLOP the ViT "
             f"would run (full epoch budgets, one node) = {gpu_hours(saved):,.0f} GPU-hours (A100 bf16 "
             f"at {UTILISATION:.0%} utilisation); {released} of {len(plan)} trials release the ViT trunk "
             f"(augmentation off)."]
    groups = _groups(plan)
    augmenting = [(t, _resolved(t, setting)[0]) for t in plan if _resolved(t, setting)[1]]
    if augmenting:
        extra = sum(_saved(t, e, False, groups[(t.llm, t.benchmark)])
                    - _saved(t, e, True, groups[(t.llm, t.benchmark)]) for t, e in augmenting)
        lines.append(f"  {len(augmenting)} trials train with augmentation (the paper's recipe): training "
                     f"without it (--augment off) would save {extra / 1e18:.1f} EFLOP = "
                     f"{gpu_hours(extra):,.0f} GPU-hours more and free the trunk's GPU memory, at the "
                     f"price of the crops' regularisation.")
    return "\n".join(lines)
