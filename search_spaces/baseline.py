"""The baseline row of Table 1: the whole Q-Former fine-tuned, LLM frozen, no LoRA.

Studied hyper-parameters: none within the space (one cell per LLM and benchmark: 4 trials);
it is the reference the LoRA rows are compared against.
Nuisance hyper-parameters: the learning rate (None = the paper's 2e-5 / the tiny preset's default).
Fixed hyper-parameters: the rest of the recipe (trainables.defaults), seed; rank is 0 (no LoRA).
"""
LLMS = ("flan-t5-xl", "vicuna-7b")
BENCHMARKS = ("scienceqa", "iconqa")

CELLS = [
    {"benchmark": benchmark, "llm": llm, "method": "baseline", "sublayer": "none",
     "rank": 0, "lr": None}
    for benchmark in BENCHMARKS
    for llm in LLMS
]

# {"grid_search": [...]} is exactly what ray.tune.grid_search returns; written out so that
# loading a space (e.g. for --dry-run) does not import Ray.
SPACE = {"cell": {"grid_search": CELLS}}
