"""A grid trial Tune failed before it reported still shows: as a failed cell, in MLflow too."""
from __future__ import annotations

from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from orchestrator.driver.unreported import NEVER_REPORTED, failed_message, grid_results, reported
from orchestrator.results.model import ERROR, FINISHED, outcomes
from orchestrator.tracking.mlflow_runs import trial_result
from orchestrator.tracking.tracker import SweepTracker
from trainables.config import TrialConfig

BASE = {"method": "qformer_lora", "sublayer": "ffn", "llm": "tiny-t5", "benchmark": "synth-iconqa",
        "epochs": 3}
PLANNED = [TrialConfig.from_dict({**BASE, "rank": r, "seed": s}) for r in (1, 2) for s in (0, 1)]
REUSE = ("Failure # 1 (occurred at 2026-11-30_23-34-05)\nTrainable runner reuse requires "
         "reset_config() to be implemented and return True.\n")


def ran(config: TrialConfig) -> SimpleNamespace:
    """A Ray Result of a trial that finished (what from_tune_result reads)."""
    metrics = {"trial_id": f"t{config.rank}{config.seed}", "best_val_acc": 0.6, "test_acc": 0.55,
               "best_epoch": 3, "epoch": 3}
    return SimpleNamespace(config={"cell_index": 0, **config.to_dict()}, metrics=metrics,
                           metrics_dataframe=None, error=None)


def never_started(error: str = REUSE) -> SimpleNamespace:
    """What Ray gives for a trial it failed before its first report: no config, no metrics."""
    return SimpleNamespace(config=None, metrics={"trial_id": "x"}, metrics_dataframe=None,
                           error=error)


class Log:
    def __init__(self) -> None:
        self.calls: list[tuple[TrialConfig, str]] = []

    def log_unreported(self, config: TrialConfig, error: str) -> str:
        self.calls.append((config, error))
        return f"run{len(self.calls)}"


def test_the_trial_that_never_reported_is_a_failed_cell_with_tunes_reason():
    log = Log()
    lost = PLANNED[2]  # rank 2, seed 0: the seed is part of what identifies a grid trial
    results = [ran(c) for c in PLANNED if c is not lost] + [never_started()]
    trials = grid_results(results, PLANNED, log)
    assert len(trials) == 4 and [c for c, _ in log.calls] == [lost]
    failed = [t for t in trials if t.status == ERROR]
    assert [(t.cell.id, t.seed, t.run_id) for t in failed] == [(lost.cell_id, 0, "run1")]
    assert failed[0].error == (f"{NEVER_REPORTED} (Tune: Trainable runner reuse requires "
                               f"reset_config() to be implemented and return True.)")
    assert sum(t.status == FINISHED for t in trials) == 3
    cell = next(o for o in outcomes(trials) if o.cell.id == lost.cell_id)
    assert not cell.chosen.failed  # its other seed ran: the cell keeps that one


def test_a_lost_trial_under_its_actors_previous_config_is_not_counted_twice():
    """Live, Ray gives the never-started trial the config of the trial the reused actor ran
    before (Trial.last_result falls back to the actor's default result)."""
    log = Log()
    lost = PLANNED[2]
    impostor = SimpleNamespace(config={"cell_index": 1, **PLANNED[1].to_dict()},
                               metrics={"trial_id": "x", "training_iteration": 0},
                               metrics_dataframe=None, error=REUSE)
    results = [ran(c) for c in PLANNED if c is not lost] + [impostor]
    trials = grid_results(results, PLANNED, log)
    assert [c for c, _ in log.calls] == [lost] and len(trials) == 4
    assert [(t.cell.id, t.seed) for t in trials if t.status == ERROR] == [(lost.cell_id, 0)]
    assert "reset_config()" in log.calls[0][1]


def test_two_lost_trials_are_not_guessed_a_reason():
    log = Log()
    trials = grid_results([ran(PLANNED[0]), ran(PLANNED[1]), never_started()], PLANNED, log)
    assert {(c.rank, c.seed) for c, _ in log.calls} == {(2, 0), (2, 1)}
    assert {t.error for t in trials if t.status == ERROR} == {NEVER_REPORTED}
    assert [o.cell.id for o in outcomes(trials) if o.chosen.failed] == [PLANNED[2].cell_id]


def test_nothing_is_added_when_every_trial_reported():
    log = Log()
    assert len(grid_results([ran(c) for c in PLANNED], PLANNED, log)) == 4 and not log.calls


def test_the_message_names_the_cells_and_the_command_that_reruns_them():
    failed = [SimpleNamespace(cell=PLANNED[2].cell)]
    text = failed_message(failed, ["--space", "full_grid"])
    assert PLANNED[2].cell_id in text
    assert text.endswith("python -m orchestrator.sweep --space full_grid --resume")
    assert failed_message(failed, ["--resume"]).count("--resume") == 1


def test_the_failed_run_reads_back_as_a_failed_trial_of_its_cell(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = SweepTracker(uri, "sweep-lost", "s", ["sweep"], 0, False, outbox_dir=tmp_path / "box")
    tracker.preflight()
    tracker.start()
    run_id = tracker.callback().log_unreported(PLANNED[2], f"{NEVER_REPORTED} (Tune: boom)")
    assert tracker.close(wait_s=0) == 0
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"].endswith("(Tune: boom)")
    back = trial_result(run)
    assert (back.cell, back.status, back.seed, back.test_acc) == (PLANNED[2].cell, ERROR, 0, None)


def test_a_trial_that_failed_in_its_first_epoch_keeps_its_own_error():
    log = Log()
    oom = SimpleNamespace(config={"cell_index": 2, **PLANNED[2].to_dict()},
                          metrics={"trial_id": "t20"}, metrics_dataframe=None,
                          error=RuntimeError("CUDA out of memory"))
    trials = grid_results([ran(c) for c in PLANNED if c is not PLANNED[2]] + [oom], PLANNED, log)
    assert not log.calls
    assert [t.error for t in trials if t.status == ERROR] == ["RuntimeError: CUDA out of memory"]


def test_a_retunes_trials_differ_by_lr_and_its_lost_trial_is_set_apart():
    """Retunes read their Tuner through the same rule: one cell and seed, several lrs."""
    lrs = [TrialConfig.from_dict({**BASE, "rank": 2, "seed": 0, "lr": lr}) for lr in (1e-4, 3e-4)]
    impostor = SimpleNamespace(config={"cell_index": 0, **lrs[0].to_dict()},
                               metrics={"trial_id": "x"}, metrics_dataframe=None, error=REUSE)
    kept, lost = reported([ran(c) for c in lrs] + [impostor, never_started()])
    assert [t.lr for t in kept] == [1e-4, 3e-4] and len(lost) == 2
