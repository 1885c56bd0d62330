"""python -m orchestrator.sweep: run an ablation sweep (grid phase, retunes, summary).

Kept thin: it parses and cross-checks options, then calls spaces (what to run), plan (--dry-run),
tuner/schedulers (how to run), retune (starred cells), tracking and summary. Every check that
can fail runs before Ray starts, and fails with one "sweep: error: ..." line and exit code 2.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from typing import NoReturn

from orchestrator.driver.interrupts import Interrupted, SweepStop
from orchestrator.driver.local_ray import prefer_loopback
from orchestrator.driver.options import AUGMENT_CHOICES, OptionError, SweepOptions
from orchestrator.driver.spaces import SPACE_MODULES, SpaceError
from trainables import defaults
from trainables.excerpt import one_line

DESCRIPTION = """\
Run the paper's LoRA ablation (or any search space) as a Ray Tune sweep.

With only --space it runs fully offline on the embedded stand-ins: the paper's LLMs
flan-t5-xl and vicuna-7b are replaced by the tiny presets tiny-t5 / tiny-llama and the
benchmarks scienceqa / iconqa by the synthetic synth-scienceqa / synth-iconqa. Spaces always
use the paper's names; --llm, --benchmark and --data-root say what those names stand for.
"""
EPILOG = """\
examples:
  python -m orchestrator.sweep --space smoke
  python -m orchestrator.sweep --space full_grid --dry-run --plan-out plan.json
  python -m orchestrator.sweep --space full_grid --dry-run --node-type gpu_a10g --makespan-gpus 16
  python -m orchestrator.sweep --space full_grid --llm flan-t5-xl=/models/instructblip-flan-t5-xl \\
      --data-root scienceqa=/data/ScienceQA
  python -m orchestrator.sweep --space my_space.yaml --scheduler fifo --resume

YAML spaces: {methods: [baseline, {method: qformer_lora, sublayers: [ffn, all]}],
  ranks: [1, 2], llms: [flan-t5-xl], benchmarks: [iconqa], epochs: 4, lr: 1e-4}

exit status: 0 done; 1 some trials failed; 2 bad input (one line, nothing started);
  3 trained, but MLflow was unreachable: updates wait in <storage>/<name>/tracking-outbox
  (python -m orchestrator.results.report --experiment NAME --sync writes them); 4 stopped before the
  storage filled up (free space, then --resume); 130 / 143 interrupted by SIGINT / SIGTERM
  (--resume continues). A local sweep's Ray listens on 127.0.0.1 only.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True, metavar="NAME|FILE.yaml",
                   help=f"search space: one of {', '.join(SPACE_MODULES)}, or a YAML file")
    what = p.add_argument_group("what runs (paper name = what it stands for; repeatable)")
    what.add_argument("--llm", action="append", default=[], metavar="PAPER=PRESET|DIR",
                      help="e.g. flan-t5-xl=flan-t5-xl (real, HF cache), vicuna-7b=/models/vicuna "
                           "(real, local dir) or flan-t5-xl=small-t5 (a preset); default: tiny stand-ins")
    what.add_argument("--benchmark", action="append", default=[], metavar="PAPER=NAME",
                      help="e.g. iconqa=sample-iconqa; default: the synth-* stand-ins")
    what.add_argument("--data-root", action="append", default=[], metavar="PAPER=DIR",
                      help="run the real benchmark from its official files, e.g. scienceqa=/data/sqa")
    what.add_argument("--epochs", type=int, help="epoch budget of every trial (default: the recipe's)")
    what.add_argument("--seed", type=int,
                      help="seed of every trial and of the retune sampler (default: the space's "
                           "seed, else 0)")
    what.add_argument("--seeds", type=int, metavar="N",
                      help="run every cell N times with seeds seed, seed+1, ...: Table 1 shows "
                           "mean +- sd (default: the space's 'seeds', else 1)")
    what.add_argument("--cache-dir", default=SweepOptions.cache_dir,
                      help="where prepared benchmark Parquet is kept (default %(default)s)")
    what.add_argument("--augment", choices=AUGMENT_CHOICES,
                      help="random resized crop + flip in training (default: the recipe's: on for the "
                           "real models, as in the paper; off for the tiny stand-ins). off: the ViT "
                           "feature cache serves training too and trials release the ViT (faster, "
                           "~2 GB less GPU memory) at the price of the crops' regularisation")
    how = p.add_argument_group("how it runs")
    how.add_argument("--scheduler", choices=("asha", "fifo"), default=SweepOptions.scheduler,
                     help="asha: stop weak trials early, compared only within (benchmark, LLM); "
                          "fifo: run every trial to its end (the complete table)")
    how.add_argument("--grace-period", type=int,
                     help="ASHA: epoch of the first stop decision (default: the recipe's, "
                          "trainables.defaults.asha_defaults)")
    how.add_argument("--reduction-factor", type=float,
                     help="ASHA: keep the top 1/N at each rung (default: the recipe's, "
                          "trainables.defaults.asha_defaults)")
    how.add_argument("--brackets", type=int,
                     help="ASHA: number of brackets (default: the recipe's)")
    how.add_argument("--rung-metric", choices=tuple(defaults.RUNG_METRICS),
                     help="ASHA: what a rung compares (default: the recipe's)")
    how.add_argument("--max-concurrent", type=int,
                     help="trials at once (default: the Ray cluster's CPUs / --cpus-per-trial)")
    how.add_argument("--cpus-per-trial", type=float, default=SweepOptions.cpus_per_trial,
                     help="CPUs Ray reserves per trial (default %(default)g)")
    how.add_argument("--gpus-per-trial", type=gpus_option, metavar="auto|N",
                     help="auto: each trial gets the GPU share and node type its planned peak memory "
                          "needs (orchestrator/placement/packing.py; the default with real presets); "
                          "N: every trial asks for N GPUs (0 = CPU, the default with the tiny "
                          "stand-ins; 0.25 = four per GPU)")
    how.add_argument("--cluster-config", metavar="FILE.yaml",
                     help="Ray cluster launcher YAML whose node types (GPU, GPUs, CPUs, price) placement "
                          "and cost use (default: on a launched cluster's head ~/ray_bootstrap_config.yaml, "
                          "else this machine)")
    how.add_argument("--price", action="append", default=[], metavar="NODE_TYPE=USD_PER_HOUR",
                     help="price of one node-hour, overriding the cluster config's table (repeatable; "
                          "'local' prices this machine)")
    how.add_argument("--cpu", action="store_true",
                     help="run real presets (flan-t5-xl, vicuna-7b) on CPU anyway: hours per step at "
                          "real size, for checks; without it a real preset needs a GPU per trial")
    how.add_argument("--weight-dtype", choices=("bf16", "fp16", "fp32"),
                     help="storage dtype of the frozen ViT/LLM/Q-Former (default: the preset's, bf16 for "
                          "the real ones; fp16 for GPUs without bf16); what trains is always fp32")
    how.add_argument("--activation-checkpointing", choices=("auto", "on", "off"),
                     help="recompute LLM/Q-Former activations in backward; auto (default): on, and the "
                          "micro-batch shrunk at the same effective batch, only as far as the GPU needs")
    how.add_argument("--random-weights", action="store_true",
                     help="real presets at full size with deterministic random weights and stand-in "
                          "tokenizers, nothing downloaded (memory/speed checks; accuracies are meaningless)")
    how.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    how.add_argument("--max-failures", type=int, default=SweepOptions.max_failures,
                     help="retries of a failing trial (default %(default)s)")
    how.add_argument("--no-vit-cache", action="store_true",
                     help="run the frozen ViT on every image in every step instead of reading its "
                          "features from the node's cache (same results, only slower)")
    how.add_argument("--vit-cache-dir",
                     help=f"node-local directory of the ViT feature cache (default <cache-dir>/"
                          f"{defaults.VIT_CACHE_SUBDIR}; each host keeps its own entries under it)")
    how.add_argument("--vit-cache-max-gb", type=float,
                     help="size bound of one node's ViT feature cache, least recently used entries "
                          f"evicted first (default {defaults.VIT_CACHE_MAX_GB:g})")
    out = p.add_argument_group("where results go")
    out.add_argument("--storage", default=SweepOptions.storage,
                     help="Tune storage: a local dir or a URI pyarrow.fs understands, e.g. s3://bucket/x "
                          "(default %(default)s; multi-node clusters need a shared path or URI)")
    out.add_argument("--name", help="run name (default sweep-<space>); --resume finds the run by it")
    out.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, "
                                            "else sqlite:///mlflow.db)")
    out.add_argument("--report-dir", help="where Table 1, Figure 2 and learning curves are written "
                                          "(default reports/<name>)")
    out.add_argument("--resume", action="store_true",
                     help="continue an interrupted sweep of the same --name/--storage")
    modes = p.add_argument_group("modes")
    modes.add_argument("--dry-run", action="store_true",
                       help="list every trial with parameter counts at the real model sizes and "
                            "memory/FLOPs estimates, then exit (Ray is not started)")
    modes.add_argument("--plan-out", metavar="FILE.json", help="with --dry-run: also write the plan as JSON")
    modes.add_argument("--verbose", action="store_true",
                       help="Ray Tune's full trial table every 30 s and the workers' logs "
                            "(default: one compact progress line per change)")
    modes.add_argument("--node-type", metavar="NAME",
                       help="with --dry-run: price the space on this node type only")
    modes.add_argument("--makespan-gpus", type=int, default=SweepOptions.makespan_gpus, metavar="N",
                       help="with --dry-run: the makespan column is for N GPUs (default %(default)s)")
    modes.add_argument("--no-retune", action="store_true", help="skip re-tuning divergent cells")
    modes.add_argument("--retune-samples", type=int,
                       help="learning rates tried per divergent cell (default search_spaces.lr_retune)")
    modes.add_argument("--trainable", metavar="MODULE:FUNCTION",
                       help="advanced (tests, experiments): a different Ray Tune function trainable "
                            "taking the flat trial config (default orchestrator.driver.tuner:run_cell)")
    return p


def fail(message: str) -> NoReturn:
    """The sweep's one-line error (exit 2): an option's value, a space, data, storage, ..."""
    print(f"sweep: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(2)


def gpus_option(value: str) -> str | float:
    """--gpus-per-trial: 'auto' or a number >= 0 (above 1: whole GPUs)."""
    if value == "auto":
        return value
    try:
        gpus = float(value)
    except ValueError:
        gpus = -1.0
    # inf / nan parse: SweepOptions refuses them in one line, as it does --cpus-per-trial's
    if gpus < 0 or (1 < gpus < math.inf and gpus != int(gpus)):
        raise argparse.ArgumentTypeError(f"expected 'auto', a fraction in [0, 1] or a whole number of "
                                         f"GPUs, got {value!r}")
    return gpus


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        options = SweepOptions.from_namespace(parser.parse_args(argv), argv)
    except OptionError as err:
        fail(str(err))  # a value the parser accepted but that cannot run: one line, no usage
    stop = SweepStop()
    stop.install()  # Ctrl-C or SIGTERM from here on: exit 130 / 143 with one line, not a traceback
    try:
        return _run(options, stop)
    except Interrupted as err:
        print(f"sweep: interrupted by {signal.Signals(err.signum).name} before any trial "
              f"started; nothing to resume", file=sys.stderr)
        return 128 + err.signum
    finally:
        stop.restore()


def _run(options: SweepOptions, stop: SweepStop) -> int:
    # after parsing: --help and option errors stay instant
    from orchestrator.driver import prepare, run
    # Before anything imports ray (prepare does for ASHA): a local sweep's Ray on 127.0.0.1 only.
    with prefer_loopback(options.address):
        try:
            prepared = prepare.prepare(options)
            if options.dry_run:
                return prepare.dry_run(prepared, options)
            return run.run(prepared, options, stop=stop)
        except (SpaceError, prepare.SweepError) as err:
            fail(str(err))  # one line naming the culprit (no usage block: the options parsed)


if __name__ == "__main__":
    sys.exit(main())
