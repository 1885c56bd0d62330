"""One row group of Table 1: the qformer_lora rows at every rank, for both LLMs and benchmarks.

Studied hyper-parameters: the sublayers qformer_lora targets
(trainables.methods.METHODS["qformer_lora"].sublayers) and the LoRA rank (1, 2, 4, 8).
Nuisance hyper-parameters: the learning rate (None = the paper's default for qformer_lora; divergent
cells are re-tuned afterwards, see search_spaces.lr_retune).
Fixed hyper-parameters: the rest of the recipe (trainables.defaults), LoRA alpha 8 / dropout 0, seed.
"""
from trainables.methods import METHODS
from trainables.vocab import PAPER_RANKS

LLMS = ("flan-t5-xl", "vicuna-7b")
BENCHMARKS = ("scienceqa", "iconqa")

CELLS = [
    {"benchmark": benchmark, "llm": llm, "method": "qformer_lora", "sublayer": sublayer,
     "rank": rank, "lr": None}
    for benchmark in BENCHMARKS
    for llm in LLMS
    for sublayer in METHODS["qformer_lora"].sublayers
    for rank in PAPER_RANKS
]

# {"grid_search": [...]} is exactly what ray.tune.grid_search returns; written out so that
# loading a space (e.g. for --dry-run) does not import Ray.
SPACE = {"cell": {"grid_search": CELLS}}
