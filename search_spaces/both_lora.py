"""One row group of Table 1: the both_lora rows at every rank, for both LLMs and benchmarks.

Studied hyper-parameters: the sublayers both_lora targets
(trainables.methods.METHODS["both_lora"].sublayers) and the LoRA rank (1, 2, 4, 8).
Nuisance hyper-parameters: the learning rate (None = the paper's default for both_lora; divergent
cells are re-tuned afterwards, see search_spaces.lr_retune).
Fixed hyper-parameters: the rest of the recipe (trainables.defaults), LoRA alpha 8 / dropout 0, seed.
"""
from trainables.vocab import PAPER_RANKS

# Plain data in the space format of orchestrator.driver.spaces (the same as a YAML space).
SPACE = {"methods": ["both_lora"], "ranks": list(PAPER_RANKS)}
