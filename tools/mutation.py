"""Mutation testing of the core modules: does each fast test suite notice a one-line bug?

    python -m tools.mutation                  # every module below, one after another
    python -m tools.mutation loop retune      # some of them
    python -m tools.mutation --list           # the modules and the tests that guard them

Why per module: each core module is checked against the fast tests that are meant to guard it
(not the whole suite), so a surviving mutant says "these tests cannot tell this line is
wrong", and a run stays bounded (37 minutes for everything on 2 quiet cores, measured
2026-12-01: docs/MUTATION.md). Each module runs mutmut 3 (`pip install -e '.[mutation]'`)
in its own scratch folder, `.mutation/<module>/`, whose `mutants/` copy of the repo holds the
mutated file; the working tree is never touched. The folder is kept, so
`cd .mutation/<module> && mutmut show <mutant>` shows a survivor's diff, and a rerun only
retests what changed. The per-module counts (generated, killed, survived, timeout, no tests)
and the kill rate end the output, one JSON line per module. Not part of CI: it takes tens of
minutes; docs/MUTATION.md records the last full run and the survivors judged harmless.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRATCH = REPO / ".mutation"
PACKAGES = ("orchestrator", "trainables", "search_spaces", "tests")
"""What each scratch folder links to (mutmut copies them into mutants/)."""
FAST = "not integration and not slow and not gpu"


@dataclass(frozen=True)
class Target:
    """One core module and the fast tests that should notice any bug in it."""

    sources: tuple[str, ...]
    tests: tuple[str, ...]
    why: str
    glue: tuple[str, ...] = ()
    """Functions (name globs) outside the core behaviour: orchestration that needs Ray or a
    Tuner and is covered by the integration tier. Their mutants are run and listed but do not
    count towards the module's kill rate."""


TARGETS: dict[str, Target] = {
    # test_loop.py / test_loop_selection.py run the same rules on a real tiny InstructBLIP:
    # 1-4 min per mutant on 2 shared cores, ~700 mutants; the fast control tests guard the
    # rules, and trial setup (model, data, memory fit) is left to those real-model tests.
    "loop": Target(("trainables/loop.py",), ("tests/trainables/test_loop_control.py",
                                             "tests/trainables/test_loop_reports.py"),
                   "epoch loop, best-state selection and restore, divergence rule",
                   glue=("build_trial", "_fit_settings")),
    "scoring": Target(("trainables/scoring.py",), ("tests/trainables/test_scoring.py",),
                      "rank classification: candidate NLL, prediction, accuracy"),
    "schedulers": Target(("orchestrator/driver/schedulers.py",), ("tests/orchestrator/test_schedulers.py",),
                         "grouped ASHA: stop decisions within (benchmark, LLM)"),
    "retune": Target(("orchestrator/driver/retune.py",), ("tests/orchestrator/test_retune.py",),
                     "divergent-cell rule and retune selection",
                     glue=("retune_cell", "retune_divergent")),
    "table1": Target(("orchestrator/results/table1.py", "orchestrator/results/summary.py",
                      "orchestrator/results/model.py"),
                     ("tests/orchestrator/test_report.py", "tests/orchestrator/test_summary.py",
                      "tests/orchestrator/test_results.py", "tests/orchestrator/test_table1_output.py",
                      "tests/orchestrator/test_table1_stats.py"),
                     "Table 1 cell selection and the results model"),
    "accounting": Target(("trainables/accounting.py",), ("tests/trainables/test_accounting.py",),
                         "trainable-parameter accounting"),
    "data": Target(("trainables/data/scienceqa.py", "trainables/data/iconqa.py",
                    "trainables/data/records.py", "trainables/data/prepare.py"),
                   ("tests/trainables/data/test_data_records.py",
                    "tests/trainables/data/test_data_validation.py",
                    "tests/trainables/data/test_data_prepare.py",
                    "tests/trainables/data/test_data_loaders.py"),
                   "benchmark data validation and all-or-nothing preparation"),
}


def _toml_list(items: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def write_scratch(name: str, target: Target) -> Path:
    """`.mutation/<name>/`: links to the packages and a pyproject.toml that configures mutmut
    for this module and the pytest options of the fast tier."""
    work = SCRATCH / name
    work.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        link = work / package
        if not link.is_symlink():
            link.symlink_to(REPO / package, target_is_directory=True)
    markers = _toml_list(["integration: real services", "gpu: needs CUDA", "slow: > 30 s"])
    (work / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        f'testpaths = ["tests"]\naddopts = "-p no:cacheprovider"\nmarkers = {markers}\n\n'
        "[tool.mutmut]\n"
        f"source_paths = {_toml_list(target.sources)}\n"
        f"also_copy = {_toml_list([p for p in PACKAGES if p != 'tests'])}\n"
        f"pytest_add_cli_args = {_toml_list(['-m', FAST, '-q'])}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(target.tests)}\n"
        # torch and pyarrow start threads at import: workers come from a clean fork server
        'process_isolation = "forkserver"\n'
        "timeout_multiplier = 5.0\ntimeout_constant = 30.0\n"
        )
    return work


def run_module(name: str, target: Target, children: int, fresh: bool,
               survivors: bool = False, only: tuple[str, ...] = ()) -> dict:
    """Run mutmut for one module; returns its counts, read from mutmut's result files.
    ``survivors``: retest only the mutants an earlier run did not kill (after new tests).
    ``only``: mutmut name globs (e.g. 'trainables.data.records.*') that bound the run to
    part of a module; the rest stays 'not checked' in the counts."""
    work = write_scratch(name, target)
    if fresh:
        shutil.rmtree(work / "mutants", ignore_errors=True)
    again: list[str] = list(only)
    if survivors and (work / "mutants").is_dir():
        again = sorted(m for m, s in read_statuses(work, target).items()
                       if s not in ("killed", "timeout")
                       and (not only or any(fnmatch.fnmatch(m, g) for g in only)))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": ""}  # mutmut puts mutants/ first; the work tree must not shadow it
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-c", "from mutmut.__main__ import cli; cli()", "run",
                          "--max-children", str(children), *again], cwd=work, env=env,
                         capture_output=True, text=True)
    (work / "run.log").write_text(run.stdout[-200_000:] + "\n--- stderr ---\n" + run.stderr[-50_000:])
    if run.returncode != 0:
        raise SystemExit(f"mutation {name}: mutmut failed (exit {run.returncode}); see "
                         f"{work / 'run.log'}:\n{(run.stdout + run.stderr)[-2000:]}")
    statuses = read_statuses(work, target)
    return summarise(name, target, statuses, time.monotonic() - started)


def read_statuses(work: Path, target: Target) -> dict[str, str]:
    """mutant name -> mutmut's status (killed, survived, timeout, no tests, ...)."""
    from mutmut.stats import status_by_exit_code
    statuses: dict[str, str] = {}
    for source in target.sources:
        meta = json.loads((work / "mutants" / (source + ".meta")).read_text())
        statuses.update({k: status_by_exit_code[v] for k, v in meta["exit_code_by_key"].items()})
    return statuses


def function_of(mutant: str) -> str:
    """'orchestrator.driver.retune.x_margin__mutmut_3' -> 'margin'; methods -> 'Class.method'."""
    head = mutant.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]
    return head[2:] if head.startswith("x_") else head.lstrip("x").strip("ǁ").replace("ǁ", ".")


def summarise(name: str, target: Target, statuses: dict[str, str], seconds: float) -> dict:
    """Counts and kill rate over the checked core (non-glue) mutants; a timeout counts as killed
    (the mutant hung the tests), 'no tests' as not killed (nothing guards that line)."""
    core = {m: s for m, s in statuses.items()
            if not any(fnmatch.fnmatch(function_of(m), g) for g in target.glue)}
    count = {s: sum(v == s for v in core.values()) for s in set(core.values())}
    killed = count.get("killed", 0) + count.get("timeout", 0)
    checked = len(core) - count.get("not checked", 0)  # a bounded (--only) or stopped run
    return {"module": name, "kill_rate": round(killed / checked, 4) if checked else None,
            "generated": len(statuses), "core": len(core), "killed": killed,
            "survived": count.get("survived", 0), "no_tests": count.get("no tests", 0),
            "not_checked": count.get("not checked", 0),
            "other": len(core) - killed - count.get("survived", 0) - count.get("no tests", 0),
            "glue": len(statuses) - len(core), "seconds": round(seconds, 1),
            "not_killed": sorted(f"{m}: {s}" for m, s in core.items()
                                 if s not in ("killed", "timeout", "not checked"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mutation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--list", action="store_true", help="print the modules and their tests")
    parser.add_argument("--children", type=int, default=2, help="parallel mutants (default 2)")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--survivors", action="store_true",
                        help="retest only the mutants the last run did not kill (after adding tests)")
    parser.add_argument("--only", action="append", default=[], metavar="GLOB",
                        help="mutmut mutant-name glob bounding the run (repeatable), e.g. "
                             "'trainables.data.records.*'")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    if args.list:
        for name, t in TARGETS.items():
            print(f"{name:11} {' '.join(t.sources)}\n{'':11} guarded by {' '.join(t.tests)}")
        return 0
    results, failed = [], []
    for name in args.modules or TARGETS:
        try:  # one module's mutmut failure (e.g. its stats run) must not cost the others' runs
            results.append(run_module(name, TARGETS[name], args.children, args.fresh, args.survivors,
                                      tuple(args.only)))
        except SystemExit as err:
            failed.append(name)
            print(err, file=sys.stderr)
    for r in results:
        rate = "-" if r["kill_rate"] is None else f"{100 * r['kill_rate']:5.1f}%"
        print(f"{r['module']:11} generated {r['generated']:4} (core {r['core']:4}, glue "
              f"{r['glue']:3})  killed {r['killed']:4}  survived {r['survived']:3}  no tests "
              f"{r['no_tests']:3}  not checked {r['not_checked']:3}  kill rate {rate}  "
              f"({r['seconds']:.0f} s)")
        for s in r["not_killed"]:
            print(f"{'':11} not killed: {s}")
        if r["glue"]:
            print(f"{'':11} glue (not counted; guarded by the integration or real-model tests): "
                  f"{', '.join(TARGETS[r['module']].glue)}")
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "not_killed"}))
    if failed:
        print(f"mutmut failed for: {', '.join(failed)} (see .mutation/<module>/run.log)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
