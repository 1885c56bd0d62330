"""One row group of Table 1: the llm_lora rows at every rank, for both LLMs and benchmarks.

Studied hyper-parameters: the sublayers llm_lora targets
(trainables.methods.METHODS["llm_lora"].sublayers) and the LoRA rank (1, 2, 4, 8).
Nuisance hyper-parameters: the learning rate (None = the paper's default for llm_lora; divergent
cells are re-tuned afterwards, see search_spaces.lr_retune).
Fixed hyper-parameters: the rest of the recipe (trainables.defaults), LoRA alpha 8 / dropout 0, seed.
"""
from trainables.vocab import PAPER_RANKS

# Plain data in the space format of orchestrator.driver.spaces (the same as a YAML space).
SPACE = {"methods": ["llm_lora"], "ranks": list(PAPER_RANKS)}
