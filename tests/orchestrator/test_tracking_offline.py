"""The sweep's tracker when MLflow stops answering mid-sweep: the Tune callback never raises or
blocks, and once the store is back every run, metric, status and tag lands, once."""
from __future__ import annotations

from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient
from test_outbox import FlakyClient

from orchestrator.tracking.tracker import SweepTracker

CONFIG = {"method": "qformer_lora", "sublayer": "ffn", "rank": 2, "llm": "tiny-t5",
          "benchmark": "synth-iconqa", "epochs": 3, "seed": 0}


@dataclass
class FakeTrial:
    trial_id: str
    config: dict
    last_result: dict = field(default_factory=dict)
    checkpoint: None = None


def test_an_outage_mid_trial_loses_and_doubles_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    t = SweepTracker(uri, "sweep-off", "s", ["sweep"], 0, False, outbox_dir=tmp_path / "box")
    t._client = FlakyClient(uri)
    t.preflight()
    t.start()
    logger = t.callback()
    logger.setup()
    running = FakeTrial("t1", dict(CONFIG))
    logger.on_trial_start(0, [], running)
    logger.on_trial_result(0, [], running, {"epoch": 1, "val_acc": 0.4, "best_val_acc": 0.4})
    t.client.down = True  # the server stops
    late = FakeTrial("t2", {**CONFIG, "rank": 4})
    logger.on_trial_start(1, [], late)  # created while offline: a placeholder run
    for epoch in (2, 3):
        result = {"epoch": epoch, "val_acc": 0.5, "best_val_acc": 0.5}
        logger.on_trial_result(epoch, [], running, result)
        logger.on_trial_result(epoch, [], late, result)
    running.last_result = {"epoch": 3, "test_acc": 0.45, "best_epoch": 3}
    logger.on_trial_complete(3, [], running)
    t.finish("KILLED")  # e.g. Ctrl-C while the server is down: late is still running
    assert t.outbox.pending > 0 and (tmp_path / "box" / "outbox.jsonl").is_file()
    t.client.down = False  # the server is back
    assert t.close(wait_s=0) == 0 and not (tmp_path / "box").exists()
    client = MlflowClient(uri)
    runs = {r.data.tags["sweep.trial_id"]: r for r in client.search_runs(
        [t.experiment_id], "tags.`sweep.role` = 'trial'")}
    assert sorted(runs) == ["t1", "t2"]
    assert runs["t1"].info.status == "FINISHED" and runs["t1"].data.tags["status"] == "finished"
    assert runs["t2"].info.status == "KILLED" and runs["t2"].data.tags["status"] == "interrupted"
    steps = [m.step for m in client.get_metric_history(runs["t1"].info.run_id, "val_acc")]
    assert steps == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(runs["t2"].info.run_id, "val_acc")] \
        == [2, 3]
    assert client.get_run(t.parent_run_id).info.status == "KILLED"


def test_a_pickled_logger_reopens_the_same_outbox(tmp_path):
    """Tune pickles its callbacks (tuner.pkl); a restored copy writes through the same outbox."""
    import pickle
    uri = f"sqlite:///{tmp_path}/m.db"
    t = SweepTracker(uri, "sweep-p", "s", ["sweep"], 0, False, outbox_dir=tmp_path / "box")
    t.preflight()
    t.start()
    copy = pickle.loads(pickle.dumps(t.callback()))
    assert copy.outbox is not t.outbox and copy.outbox.dir == tmp_path / "box"
    assert copy.client.tracking_uri == uri
