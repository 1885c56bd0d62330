"""A handful of fast trials touching every method family, both LLMs and both benchmarks.

For checking an installation end to end in about a minute, not for conclusions.
Studied hyper-parameters: method (baseline, llm_lora/attn, qformer_lora/all, both_lora/all), rank
(1 and 2), one cell per (LLM, benchmark) group.
Nuisance hyper-parameters: the learning rate (None = the method's default).
Fixed hyper-parameters: epochs = 2 and a small slice of the data (max_train_examples 48,
max_eval_examples 24) so that each trial takes seconds; the rest of the recipe from
trainables.defaults.
"""
CELLS = [
    {"benchmark": "scienceqa", "llm": "flan-t5-xl", "method": "qformer_lora", "sublayer": "all",
     "rank": 1, "lr": None},
    {"benchmark": "scienceqa", "llm": "vicuna-7b", "method": "llm_lora", "sublayer": "attn",
     "rank": 2, "lr": None},
    {"benchmark": "iconqa", "llm": "flan-t5-xl", "method": "both_lora", "sublayer": "all",
     "rank": 2, "lr": None},
    {"benchmark": "iconqa", "llm": "vicuna-7b", "method": "baseline", "sublayer": "none",
     "rank": 0, "lr": None},
]

# {"grid_search": [...]} is exactly what ray.tune.grid_search returns; written out so that
# loading a space (e.g. for --dry-run) does not import Ray.
SPACE = {"cell": {"grid_search": CELLS}, "epochs": 2, "max_train_examples": 48,
         "max_eval_examples": 24}
