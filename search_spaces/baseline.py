"""The baseline row of Table 1: the whole Q-Former fine-tuned, LLM frozen, no LoRA.

Studied hyper-parameters: none within the space (one cell per LLM and benchmark: 4 trials);
it is the reference the LoRA rows are compared against.
Nuisance hyper-parameters: the learning rate (None = the paper's 2e-5 / the tiny preset's default).
Fixed hyper-parameters: the rest of the recipe (trainables.defaults), seed; rank is 0 (no LoRA).
"""
# Plain data in the space format of orchestrator.driver.spaces (the same as a YAML space).
SPACE = {"methods": ["baseline"]}
