"""Replay ASHA offline on recorded FIFO learning curves: which settings keep each group's winner?

Why: choosing a scheduler's defaults by running whole sweeps costs a full-grid run per setting.
A FIFO sweep records every trial's complete curve once; since a trial's curve does not depend on
the scheduler (training is deterministic per seed), any scheduler's decisions can be replayed on
it in seconds -- with the very GroupedASHA the sweep uses, fed the recorded reports in the order
a Tune run with ``concurrency`` trial slots would deliver them (grid order, each epoch taking its
recorded time). For every setting the replay reports:

  trial-epochs   epochs trained under ASHA (FIFO: every curve to its own end, early stopping
                 by patience included), and FIFO / ASHA;
  winners kept   groups in which ASHA's best cell (best validation accuracy among what it let
                 run) is one of FIFO's best cells;
  within 1 SE    groups in which that cell's validation accuracy is within one binomial
                 standard error sqrt(p (1 - p) / n_val) of FIFO's best p.

    python -m orchestrator.driver.scheduler_replay record --storage DIR/rr/sweep-full_grid [...] --out curves.json
    python -m orchestrator.driver.scheduler_replay replay --curves curves.json [--concurrency 1 2 4]

The curves are a JSON file: ``provenance`` (what was run, where, when) and one entry per trial
with its config, the validation size and the per-epoch reports the rung metrics need.
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.schedulers import TrialScheduler

from orchestrator.driver.schedulers import AshaSettings, GroupedASHA
from orchestrator.driver.spaces import group_of
from orchestrator.results.stats import binomial_se

EPOCH_KEYS = ("epoch", "val_acc", "best_val_acc", "val_choice_nll", "val_gold_nll", "train_loss",
              "epoch_time_s")
CONFIG_KEYS = ("benchmark", "llm", "method", "sublayer", "rank", "lr", "seed")


@dataclass(frozen=True)
class Curve:
    """One FIFO trial: its cell and every epoch's report."""

    config: dict[str, Any]
    n_val: int
    epochs: tuple[dict[str, float], ...]

    @property
    def group(self) -> tuple[str, str]:
        return tuple(group_of(self.config))

    @property
    def cell(self) -> str:
        c = self.config
        return f"{c['method']}/{c['sublayer']}|r{c['rank']}"

    def best_val_acc(self, epochs: int) -> float:
        return max(e["val_acc"] for e in self.epochs[:epochs])


@dataclass
class _Trial:  # what GroupedASHA reads of a Tune trial
    trial_id: str
    config: dict[str, Any]


def simulate(curves: Sequence[Curve], settings: AshaSettings, concurrency: int,
             unit_time: bool = False) -> list[int]:
    """Epochs each trial trains under GroupedASHA(settings) with ``concurrency`` slots."""
    sched = GroupedASHA(settings)
    trials = [_Trial(f"r{i:05d}", c.config) for i, c in enumerate(curves)]
    for t in trials:
        sched.on_trial_add(None, t)
    ran = [0] * len(curves)
    events: list[tuple[float, int, int]] = []  # (time, trial index, epoch)
    pending = iter(range(len(curves)))

    def start(i: int | None, now: float) -> None:
        if i is not None:
            heapq.heappush(events, (now + _duration(curves[i], 1, unit_time), i, 1))

    for _ in range(concurrency):
        start(next(pending, None), 0.0)
    while events:
        now, i, epoch = heapq.heappop(events)
        ran[i] = epoch
        result = {**curves[i].epochs[epoch - 1], "epoch": epoch}
        if epoch == len(curves[i].epochs):  # its own last report (done=True): no STOP asked
            sched.on_trial_complete(None, trials[i], result)
        elif sched.on_trial_result(None, trials[i], result) == TrialScheduler.STOP:
            sched.on_trial_complete(None, trials[i], result)
        else:
            heapq.heappush(events, (now + _duration(curves[i], epoch + 1, unit_time), i, epoch + 1))
            continue
        start(next(pending, None), now)
    return ran


def _duration(curve: Curve, epoch: int, unit_time: bool) -> float:
    return 1.0 if unit_time else max(1e-3, float(curve.epochs[epoch - 1].get("epoch_time_s", 1.0)))


@dataclass(frozen=True)
class GroupOutcome:
    fifo_best: tuple[str, ...]
    fifo_acc: float
    asha_best: str
    asha_acc: float
    se: float

    @property
    def kept(self) -> bool:
        return self.asha_best in self.fifo_best

    @property
    def within_se(self) -> bool:
        return self.fifo_acc - self.asha_acc <= self.se + 1e-12


def outcomes(curves: Sequence[Curve], ran: Sequence[int]) -> dict[tuple[str, str], GroupOutcome]:
    """Per group: FIFO's best cells (ties) vs the best cell among what ASHA let run."""
    by_group: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(curves):
        by_group.setdefault(c.group, []).append(i)
    out = {}
    for group, idx in sorted(by_group.items()):
        fifo = {i: curves[i].best_val_acc(len(curves[i].epochs)) for i in idx}
        asha = {i: curves[i].best_val_acc(ran[i]) for i in idx}
        top = max(fifo.values())
        pick = max(idx, key=lambda i: (asha[i], -i))  # first of the tied, as a report would
        out[group] = GroupOutcome(tuple(curves[i].cell for i in idx if fifo[i] == top), top,
                                  curves[pick].cell, asha[pick],
                                  binomial_se(top, curves[idx[0]].n_val))
    return out


def settings_grid(max_t: int, graces: Sequence[int], factors: Sequence[float],
                  metrics: Sequence[str], brackets: Sequence[int]) -> list[AshaSettings]:
    grid = []
    for g, rf, m, b in itertools.product(graces, factors, metrics, brackets):
        try:
            grid.append(AshaSettings(max_t=max_t, grace_period=g, reduction_factor=rf,
                                     brackets=b, metric=m))
        except ValueError:
            continue  # e.g. more brackets than rungs
    return grid


def replay_table(curves: Sequence[Curve], grid: Sequence[AshaSettings],
                 concurrencies: Sequence[int], unit_time: bool = False) -> list[dict[str, Any]]:
    """One row per setting; kept / within-SE counts are the worst over ``concurrencies``."""
    fifo_epochs = sum(len(c.epochs) for c in curves)
    rows = []
    for s in grid:
        runs = [simulate(curves, s, k, unit_time) for k in concurrencies]
        results = [outcomes(curves, ran) for ran in runs]
        epochs = max(sum(ran) for ran in runs)
        rows.append({"grace": s.grace_period, "rf": s.reduction_factor, "brackets": s.brackets,
                     "metric": s.metric, "rungs": s.milestones(0), "trial_epochs": epochs,
                     "ratio": round(fifo_epochs / epochs, 2),
                     "kept": min(sum(o.kept for o in r.values()) for r in results),
                     "within_se": min(sum(o.within_se for o in r.values()) for r in results),
                     "groups": len(results[0]), "fifo_epochs": fifo_epochs})
    return rows


# -- recording and files ----------------------------------------------------------------------
def record(experiment_dirs: Sequence[Path], provenance: dict[str, Any]) -> dict[str, Any]:
    """The complete curves in Tune experiment directories (one result.json per trial).

    Only finished trials (the loop's own final report, or diverged) are kept: a trial still
    running, cut off by an interruption or stopped by ASHA (Tune marks it done too) has a partial
    curve, and replaying it as complete would misjudge it; their names are in ``unfinished``.
    Several directories of the same code and seeds may be combined (e.g. an ASHA sweep's trials
    that ran to their end plus a FIFO run of the ones it stopped): training is deterministic per
    seed, so a cell finished in two of them must have the same curve (else ValueError). A cell's
    ``index`` (the replay's grid order) is its cell_index in the first directory that holds it:
    list a full-grid run first.
    """
    curves: dict[tuple, dict[str, Any]] = {}
    index: dict[tuple, int] = {}
    unfinished: list[tuple[str, tuple]] = []
    for directory in experiment_dirs:
        for result in sorted(Path(directory).glob("*/result.json")):
            params = json.loads((result.parent / "params.json").read_text())
            key = tuple(params.get(k) for k in CONFIG_KEYS)
            index.setdefault(key, params.get("cell_index", len(index)))
            trial = _finished_curve(result, params)
            if trial is None:
                unfinished.append((f"{Path(directory).name}/{result.parent.name}", key))
            elif key not in curves:
                curves[key] = trial
            elif _val_reports(curves[key]) != _val_reports(trial):
                raise ValueError(f"{result.parent}: its curve differs from the same cell's in an "
                                 f"earlier directory: not the same code and seed")
    if not curves:
        raise ValueError(f"{', '.join(map(str, experiment_dirs))}: no finished trial with "
                         f"validation reports")
    trials = [{**t, "index": index[k]} for k, t in sorted(curves.items(), key=lambda kv: index[kv[0]])]
    missing = [name for name, key in unfinished if key not in curves]  # not finished anywhere
    return {"provenance": provenance, "trials": trials, "unfinished": missing}


def _finished_curve(result: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """One trial's curve as the fixture stores it, or None when the trial did not finish."""
    from orchestrator.driver.retune import val_size
    from orchestrator.results.model import is_final_report
    from orchestrator.tracking.mlflow_runs import parse_config
    rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
    by_epoch = {int(r["epoch"]): r for r in rows if r.get("val_acc") is not None}
    if not by_epoch or not (is_final_report(rows[-1]) or rows[-1].get("diverged")):
        return None
    epochs = [{k: (round(float(v), 6) if isinstance(v, float) else v)
               for k, v in by_epoch[e].items() if k in EPOCH_KEYS} for e in sorted(by_epoch)]
    return {"config": {k: params.get(k) for k in CONFIG_KEYS},
            "n_val": val_size(parse_config(params)), "epochs": epochs,
            "test_acc": rows[-1].get("test_acc"), "diverged": bool(rows[-1].get("diverged"))}


def _val_reports(trial: dict[str, Any]) -> list[tuple]:
    return [(e["epoch"], e.get("val_acc"), e.get("val_gold_nll")) for e in trial["epochs"]]


def dump_curves(data: dict[str, Any]) -> str:
    """``record``'s data as JSON text with one trial per line: small enough to commit as a
    fixture (~1 KB per 8-epoch curve), and a diff shows which trials changed."""
    head = {k: v for k, v in data.items() if k != "trials"}
    lines = [json.dumps(t, sort_keys=True, separators=(",", ":")) for t in data["trials"]]
    body = json.dumps(head, sort_keys=True, indent=1)[:-2]
    return body + ',\n "trials": [\n' + ",\n".join(lines) + "\n ]\n}\n"


def load_curves(path: Path) -> tuple[dict[str, Any], list[Curve]]:
    data = json.loads(Path(path).read_text())
    try:
        curves = [Curve(dict(t["config"]), int(t["n_val"]), tuple(t["epochs"]))
                  for t in data["trials"]]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a curves file ({err})") from None
    for c in curves:
        if [e["epoch"] for e in c.epochs] != list(range(1, len(c.epochs) + 1)):
            raise ValueError(f"{path}: {c.config} has gaps in its epochs")
    return data.get("provenance", {}), curves


def _row_of(s: AshaSettings | dict[str, Any]) -> tuple:
    if isinstance(s, AshaSettings):
        return (s.grace_period, s.reduction_factor, s.brackets, s.metric)
    return (s["grace"], s["rf"], s["brackets"], s["metric"])


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    header = ("| grace | rf | brackets | rung metric | rungs | trial-epochs | FIFO/ASHA | "
              "winners kept | within 1 SE |")
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['grace']} | {r['rf']:g} | {r['brackets']} | {r['metric']} | "
                     f"{','.join(map(str, r['rungs']))} | {r['trial_epochs']} | {r['ratio']:.2f} | "
                     f"{r['kept']}/{r['groups']} | {r['within_se']}/{r['groups']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestrator.driver.scheduler_replay",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="curves of a FIFO sweep -> JSON")
    rec.add_argument("--storage", type=Path, required=True, nargs="+",
                     help="Tune experiment directories (<storage>/<sweep name>), the full-grid "
                          "run first; a cell's curve comes from the first that finished it")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--provenance", action="append", default=[], metavar="KEY=VALUE")
    rep = sub.add_parser("replay", help="replay ASHA settings on recorded curves")
    rep.add_argument("--curves", type=Path, required=True)
    rep.add_argument("--grace", type=int, nargs="+", default=[1, 2, 3, 4])
    rep.add_argument("--rf", type=float, nargs="+", default=[2, 3, 4])
    rep.add_argument("--metric", nargs="+", default=["best_val_acc", "val_choice_nll", "val_gold_nll"])
    rep.add_argument("--brackets", type=int, nargs="+", default=[1, 2])
    rep.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4],
                     help="trial slots; kept/within-SE are the worst over these")
    rep.add_argument("--unit-time", action="store_true", help="every epoch takes one time unit")
    rep.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.command == "record":
        prov = dict(kv.split("=", 1) for kv in args.provenance)
        data = record(args.storage, prov)
        args.out.write_text(dump_curves(data))
        print(f"{len(data['trials'])} curves -> {args.out}; {len(data['unfinished'])} unfinished "
              f"trials left out{': ' if data['unfinished'] else ''}{', '.join(data['unfinished'])}")
        return 0
    provenance, curves = load_curves(args.curves)
    max_t = max(len(c.epochs) for c in curves)
    if provenance.get("epochs"):
        max_t = max(max_t, int(provenance["epochs"]))
    grid = settings_grid(max_t, args.grace, args.rf, args.metric, args.brackets)
    rows = replay_table(curves, grid, args.concurrency, args.unit_time)
    rows.sort(key=lambda r: (-r["kept"], -r["within_se"], -r["ratio"]))
    print(format_rows(rows))
    best = rows[0]
    print(f"\nmost saving among those keeping the most winners: grace {best['grace']}, rf "
          f"{best['rf']:g}, brackets {best['brackets']}, {best['metric']}")
    for k in args.concurrency:
        setting = next(s for s in grid if _row_of(s) == _row_of(best))
        for group, o in outcomes(curves, simulate(curves, setting, k, args.unit_time)).items():
            print(f"  concurrency {k} {'/'.join(group)}: FIFO best {', '.join(o.fifo_best)} "
                  f"({o.fifo_acc:.3f}); ASHA best {o.asha_best} ({o.asha_acc:.3f}); 1 SE {o.se:.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
