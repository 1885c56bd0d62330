"""Run one trial without Ray, for debugging: the same loop the Ray trainable runs.

    python -m trainables.run --method qformer_lora --sublayer all --rank 4 --llm tiny-t5 \\
        --benchmark synth-iconqa [--epochs 3] [--out runs/x] [--resume runs/x/epoch-002]

Every TrialConfig key is a flag (``--max-train-examples`` for ``max_train_examples``); unset
flags mean the preset's default. Each epoch's report is printed as one JSON line; with
``--out`` each epoch's checkpoint is kept as ``OUT/epoch-NNN``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from trainables.config import TrialConfig
from trainables.loop import run_trial

_BOOL = {"true": True, "false": False}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainables.run", description=__doc__.split("\n")[0])
    types = {"int": int, "float": float}
    for f in fields(TrialConfig):
        kind = str(f.type).split(" ")[0]
        convert = types.get(kind, (lambda v: _BOOL[v.lower()]) if kind == "bool" else str)
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=convert, default=None)
    parser.add_argument("--out", type=Path, default=None, help="keep each epoch's checkpoint here")
    parser.add_argument("--resume", type=Path, default=None, help="a checkpoint dir to resume from")
    parser.add_argument("--device", default="cpu")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = vars(_parser().parse_args(argv))
    out, resume, device = args.pop("out"), args.pop("resume"), args.pop("device")
    cfg = TrialConfig.from_dict({k: v for k, v in args.items() if v is not None})
    start = time.perf_counter()

    def report(metrics: dict[str, Any], checkpoint: Path | None) -> None:
        print(json.dumps(metrics), flush=True)
        if out is not None and checkpoint is not None:
            shutil.copytree(checkpoint, out / f"epoch-{metrics['epoch']:03d}", dirs_exist_ok=True)

    final = run_trial(cfg, report=report, resume_from=resume, device=device)
    print(json.dumps({"cell_id": cfg.cell_id, "wall_s": round(time.perf_counter() - start, 2),
                      "test_acc": final.get("test_acc"), "diverged": final.get("diverged")}))
    return final


if __name__ == "__main__":
    main()
