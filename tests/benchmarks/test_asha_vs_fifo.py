"""benchmarks.asha_vs_fifo: one FIFO run serves the replay and the benchmark (--only / --reuse)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import asha_vs_fifo
from trainables.config import TrialConfig


def _write_run(root: Path, kind: str, accs: dict[tuple[str, int], tuple[float, int]],
               wall: int | None) -> None:
    """A sweep's storage as trial_records reads it: one result.json + params.json per trial."""
    exp = root / kind / "rr" / "sweep-test"
    for i, ((method, rank), (acc, epochs)) in enumerate(accs.items()):
        config = TrialConfig.from_dict({"benchmark": "synth-iconqa", "llm": "tiny-t5",
                                        "method": method, "sublayer": "all", "rank": rank})
        trial = exp / f"t{i}"
        trial.mkdir(parents=True)
        (trial / "params.json").write_text(json.dumps(config.to_dict()))
        rows = [{"epoch": e, "best_val_acc": acc * e / epochs} for e in range(1, epochs + 1)]
        (trial / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    if wall is not None:
        (root / kind / "stdout.txt").write_text(f"... wall time {wall} s ...\n")


FIFO = {("llm_lora", 1): (0.70, 8), ("llm_lora", 4): (0.80, 8), ("llm_lora", 8): (0.75, 6)}
ASHA = {("llm_lora", 1): (0.60, 2), ("llm_lora", 4): (0.80, 8), ("llm_lora", 8): (0.70, 2)}


def test_reuse_runs_only_the_missing_scheduler_and_compares(tmp_path, monkeypatch, capsys):
    _write_run(tmp_path, "fifo", FIFO, wall=300)
    ran = []

    def fake_run_sweep(space, workdir, *extra):
        ran.append((space, workdir.name, extra))
        _write_run(tmp_path, "asha", ASHA, wall=None)
        return {"sweep_wall_s": 100.0, "trials": asha_vs_fifo.trial_records(workdir / "rr")}

    monkeypatch.setattr(asha_vs_fifo, "run_sweep", fake_run_sweep)
    asha_vs_fifo.main(["--workdir", str(tmp_path), "--reuse", "--space", "s", "--max-concurrent", "2"])
    assert ran == [("s", "asha", ("--scheduler", "asha", "--no-retune", "--max-concurrent", "2"))]
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(out)[:2] == ["epochs_ratio", "wall_ratio"]  # ratios first
    assert (out["trial_epochs_fifo"], out["trial_epochs_asha"]) == (22, 12)
    assert (out["epochs_ratio"], out["wall_ratio"]) == (round(22 / 12, 2), 3.0)
    assert out["same_best"] == {"synth-iconqa|tiny-t5": True} and out["reused"] == ["fifo"]


def test_only_runs_one_scheduler_and_reuse_reads_it_back(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_run_sweep(space, workdir, *extra):
        calls.append(workdir.name)
        _write_run(tmp_path, "fifo", FIFO, wall=300)
        return {"sweep_wall_s": 300.0, "trials": asha_vs_fifo.trial_records(workdir / "rr")}

    monkeypatch.setattr(asha_vs_fifo, "run_sweep", fake_run_sweep)
    asha_vs_fifo.main(["--workdir", str(tmp_path), "--only", "fifo"])
    asha_vs_fifo.main(["--workdir", str(tmp_path), "--only", "fifo", "--reuse"])  # no second run
    assert calls == ["fifo"]
    assert capsys.readouterr().out.splitlines()[-1] == \
        f"fifo: 3 trials, 22 trial-epochs, sweep wall 300.0 s in {tmp_path / 'fifo'}"


def test_reuse_and_only_need_a_workdir():
    for flag in ("--reuse", "--only=fifo"):
        with pytest.raises(SystemExit) as err:
            asha_vs_fifo.main([flag])
        assert err.value.code == 2
