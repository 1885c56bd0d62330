"""The learning-rate re-tuning space used for divergent cells (the paper's starred cells).

The paper re-ran its divergent cells at a smaller learning rate (the authors' configs: 1e-4
instead of 5e-4, 1e-5 instead of 2e-5). Here each divergent cell gets a small TPE search
(Optuna) over a log-uniform learning rate around the method's default lr0:
[lr0 * LOW_FACTOR, lr0 * HIGH_FACTOR], mostly below the default because divergence means
the default was too large.

Studied hyper-parameters: the learning rate only.
Nuisance hyper-parameters: none (the sampler is seeded from the sweep seed).
Fixed hyper-parameters: the cell (benchmark, LLM, method, sublayer, rank) and the whole rest of
its recipe, exactly as in the grid trial it re-tunes; retune_of names that cell.

Which cells are divergent is decided by orchestrator.driver.retune (the rule is documented there).
"""
from ray import tune

LOW_FACTOR = 1 / 25
"""Lower end of the search, relative to the default lr (5e-4 -> 2e-5)."""
HIGH_FACTOR = 1.5
"""Upper end of the search, relative to the default lr (a little above, in case it was noise)."""
NUM_SAMPLES = 4
"""Retune trials per divergent cell (the CLI's --retune-samples overrides it)."""


def space_for(cell_config: dict, cell_id: str, default_lr: float) -> dict:
    """The Ray Tune param space re-tuning one cell: its whole flat trial config, tagged
    retune_of=cell_id, with lr log-uniform in [default_lr * LOW_FACTOR, default_lr * HIGH_FACTOR]."""
    fixed = {k: v for k, v in cell_config.items() if k != "lr"}
    return {**fixed, "retune_of": cell_id,
            "lr": tune.loguniform(default_lr * LOW_FACTOR, default_lr * HIGH_FACTOR)}
