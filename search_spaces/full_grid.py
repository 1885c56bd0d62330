"""The paper's full ablation grid: every row of Table 1 at every rank, for both LLMs and benchmarks.

Studied hyper-parameters: method and sublayer (where LoRA goes: the 8 LoRA rows plus the baseline)
and the LoRA rank (1, 2, 4, 8). 8 LoRA methods x 4 ranks + 1 baseline = 33 cells per
(LLM, benchmark) group, x 2 LLMs x 2 benchmarks = 132 trials.
Nuisance hyper-parameters: the learning rate (None = the paper's default per method,
trainables.defaults.default_lr; divergent cells are re-tuned afterwards, see search_spaces.lr_retune).
Fixed hyper-parameters: everything else of the recipe (trainables.defaults: epochs, batch, AdamW,
linear decay, early stopping), LoRA alpha 8 / dropout 0, seed.

LLM and benchmark names are the paper's; the sweep CLI maps them to the offline stand-ins
(trainables.vocab.OFFLINE_STAND_IN) unless real models/data are given.
"""
from trainables.methods import METHODS
from trainables.vocab import PAPER_RANKS

# Plain data in the space format of orchestrator.driver.spaces (the same as a YAML space).
SPACE = {"methods": list(METHODS), "ranks": list(PAPER_RANKS)}
