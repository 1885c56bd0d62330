"""A handful of fast trials touching every method family, both LLMs and both benchmarks.

For checking an installation end to end in about a minute, not for conclusions.
Studied hyper-parameters: method (baseline, llm_lora/attn, qformer_lora/all, both_lora/all), rank
(1 and 2), one cell per (LLM, benchmark) group.
Nuisance hyper-parameters: the learning rate (None = the method's default).
Fixed hyper-parameters: epochs = 2 and a small slice of the data (max_train_examples 48,
max_eval_examples 24) so that each trial takes seconds; the rest of the recipe from
trainables.defaults.
"""
# Plain data in the space format of orchestrator.driver.spaces: explicit cells instead of a grid.
SPACE = {
    "cells": [
        {"benchmark": "scienceqa", "llm": "flan-t5-xl", "method": "qformer_lora",
         "sublayer": "all", "rank": 1},
        {"benchmark": "scienceqa", "llm": "vicuna-7b", "method": "llm_lora", "sublayer": "attn",
         "rank": 2},
        {"benchmark": "iconqa", "llm": "flan-t5-xl", "method": "both_lora", "sublayer": "all",
         "rank": 2},
        {"benchmark": "iconqa", "llm": "vicuna-7b", "method": "baseline", "sublayer": "none",
         "rank": 0},
    ],
    "epochs": 2, "max_train_examples": 48, "max_eval_examples": 24,
}
