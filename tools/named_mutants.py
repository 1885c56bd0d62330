"""The one-line bugs issue #17 named, applied by hand: each must fail at least one fast test.

    python -m tools.named_mutants            # all four; exit 1 if any survives

mutmut (tools.mutation) generates its own operators (swap a comparison, drop an argument, ...)
and does not delete a statement; these four are the behaviours users rely on most, written as
the reviewer would break them. Each is applied to a copy of the repo (the working tree is never
touched), its guard tests run there, and the first failing test is printed. A patch whose
original text is no longer in the file fails loudly: the code moved, update the patch.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = ("orchestrator", "trainables", "search_spaces", "tests", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    original: str
    mutated: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("best-state restore removed", "trainables/loop.py",
           "load_trainable_state(trial.model, best)\n", "pass  # mutant: test scored with the last state\n",
           ("tests/trainables/test_loop_control.py", "tests/trainables/test_loop_selection.py")),
    Mutant("best = last", "trainables/loop.py",
           'if state["best_epoch"] == epoch + 1:\n            best = last',
           'if True:  # mutant: the last state is saved as best\n            best = last',
           ("tests/trainables/test_loop_control.py", "tests/trainables/test_loop_selection.py")),
    Mutant("loss blow-up rule removed", "trainables/loop.py",
           'diverged = not math.isfinite(train_loss) or train_loss > cfg.divergence_factor * state["ref_loss"]',
           "diverged = not math.isfinite(train_loss)  # mutant",
           ("tests/trainables/test_loop_control.py", "tests/trainables/test_loop_selection.py")),
    Mutant("diverged run no longer loses in Table 1", "orchestrator/results/model.py",
           "usable = trial.status not in (DIVERGED, ERROR)",
           "usable = trial.status != ERROR  # mutant",
           ("tests/orchestrator/test_results.py", "tests/orchestrator/test_report.py")),
)


def check(mutant: Mutant) -> dict:
    """Apply one mutant to a copy of the repo and run its tests there; killed = they fail."""
    with tempfile.TemporaryDirectory(prefix="named-mutant-") as tmp:
        root = Path(tmp)
        for name in COPIED:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, root / name)
        target = root / mutant.file
        text = target.read_text()
        if text.count(mutant.original) != 1:
            raise SystemExit(f"{mutant.name}: {mutant.file} no longer holds the original text "
                             f"exactly once ({text.count(mutant.original)}x); update the patch")
        target.write_text(text.replace(mutant.original, mutant.mutated))
        env = {**os.environ, "PYTHONPATH": str(root), "RAY_USAGE_STATS_ENABLED": "0"}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               "-m", "not integration and not slow", *mutant.tests],
                              cwd=root, env=env, capture_output=True, text=True)
    failed = [line.split(" ")[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    return {"mutant": mutant.name, "killed": proc.returncode == 1 and bool(failed),
            "failing_test": failed[0] if failed else None, "pytest_exit": proc.returncode}


def main() -> int:
    results = [check(m) for m in MUTANTS]
    for r in results:
        print(f"{'KILLED ' if r['killed'] else 'SURVIVED'} {r['mutant']}: {r['failing_test']}")
    print(json.dumps({"killed": sum(r["killed"] for r in results), "of": len(results)}))
    return 0 if all(r["killed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
