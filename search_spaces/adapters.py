"""LoRA variants on the paper's two strongest rows: plain LoRA, DoRA and rsLoRA at every rank.

Studied hyper-parameters: the adapter variant (lora: the paper's; dora: weight-decomposed, one
learned magnitude per output feature; rslora: scale alpha / sqrt(r)), the row (both_lora/all and
qformer_lora/all) and the LoRA rank (1, 2, 4, 8). 2 rows x 3 adapters x 4 ranks = 24 cells per
(LLM, benchmark) group, x 2 LLMs x 2 benchmarks = 96 trials; the lora cells are the full
grid's own cells (same ids), so their results compare directly with a full_grid sweep.
Nuisance hyper-parameters: the learning rate (None = the paper's default per method,
trainables.defaults.default_lr); divergent cells are re-tuned afterwards.
Fixed hyper-parameters: lora_alpha = 8 (the paper's rule "fixed8"; rsLoRA applies it as
8 / sqrt(r)), dropout 0, and the whole recipe of trainables.defaults.
"""
from trainables.vocab import PAPER_RANKS

# Plain data in the space format of orchestrator.driver.spaces (the same as a YAML space).
SPACE = {
    "methods": [{"method": "both_lora", "sublayers": ["all"]},
                {"method": "qformer_lora", "sublayers": ["all"]}],
    "adapters": ["lora", "dora", "rslora"],
    "ranks": list(PAPER_RANKS),
}
