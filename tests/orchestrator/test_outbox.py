"""The tracking outbox: an unreachable MLflow never stops the sweep, and nothing is lost or doubled."""
from __future__ import annotations

import json

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.tracking.outbox import OPS_FILE, TrackingOutbox


class FlakyClient:
    """A real MlflowClient (sqlite) that fails like an unreachable server while ``down``; with
    ``lose_answers`` the write happens but the caller sees an error (a lost response)."""

    def __init__(self, uri: str) -> None:
        self.real = MlflowClient(uri)
        self.down = False
        self.lose_answers = False
        self.calls = 0

    def __getattr__(self, name):
        method = getattr(self.real, name)

        def call(*args, **kwargs):
            self.calls += 1
            if self.down:
                raise MlflowException("API request to http://127.0.0.1:1 failed with exception "
                                      "ConnectionRefusedError")
            result = method(*args, **kwargs)
            if self.lose_answers:
                raise MlflowException("Read timed out")
            return result

        return call


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory):
    """One sqlite store for the module (creating one costs seconds); an experiment per test."""
    return FlakyClient(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/m.db")


@pytest.fixture
def store(shared_client, request, tmp_path):
    shared_client.down = shared_client.lose_answers = False
    # Artifacts in tmp_path: MLflow's default is ./mlruns of the working directory.
    return shared_client, shared_client.real.create_experiment(
        request.node.name, artifact_location=str(tmp_path / "artifacts"))


def history(client, run_id, key):
    return [(m.step, m.value, m.timestamp) for m in client.real.get_metric_history(run_id, key)]


def test_online_writes_go_straight_through(store, tmp_path):
    client, exp = store
    box = TrackingOutbox(client, tmp_path / "outbox")
    run = box.create_run(exp, "r", {"k": "v"}, match={"k": "v"})
    box.log_batch(run, {"acc": 0.5}, step=1, params={"lr": "0.1"})
    assert box.pending == 0 and not (tmp_path / "outbox").exists()
    assert history(client, run, "acc")[0][:2] == (1, 0.5)


def test_an_outage_buffers_on_disk_and_flushes_once_with_original_timestamps(store, tmp_path):
    client, exp = store
    clock = Clock()
    box = TrackingOutbox(client, tmp_path / "outbox", retry_s=30, clock=clock)
    run = box.create_run(exp, "r", {"trial": "t1"}, match={"trial": "t1"})
    client.down = True
    box.log_batch(run, {"acc": 0.5}, step=1, timestamp_ms=1000)
    calls = client.calls
    for step in range(2, 6):  # while down and before retry_s, no request is even tried
        box.log_batch(run, {"acc": 0.1 * step}, step=step, timestamp_ms=1000 * step)
    assert client.calls == calls and box.pending == 5
    assert (tmp_path / "outbox" / OPS_FILE).is_file()
    box.set_terminated(run, "FINISHED")
    client.down = False
    clock.now = 31
    box.tick()
    assert box.pending == 0 and not (tmp_path / "outbox").exists()
    assert history(client, run, "acc") == [(1, 0.5, 1000)] + [
        (s, pytest.approx(0.1 * s), 1000 * s) for s in range(2, 6)]
    assert client.real.get_run(run).info.status == "FINISHED"


def test_runs_created_offline_get_their_writes_after_the_outage(store, tmp_path):
    client, exp = store
    client.down = True
    box = TrackingOutbox(client, tmp_path / "outbox")
    run = box.create_run(exp, "cell", {"trial": "t2"}, match={"trial": "t2"})
    assert run.startswith("pending-")
    box.log_batch(run, {"acc": 0.7}, step=1, tags={"status": "running"})
    box.log_dict(run, {"lr": 0.1}, "config.json")
    client.down = False
    assert box.flush()
    real = box.resolve(run)
    assert history(client, real, "acc")[0][:2] == (1, 0.7)
    assert client.real.get_run(real).data.tags["status"] == "running"


def test_a_lost_answer_never_creates_a_run_twice(store, tmp_path):
    client, exp = store
    box = TrackingOutbox(client, tmp_path / "outbox")
    client.lose_answers = True  # created server-side, but the driver sees a timeout
    run = box.create_run(exp, "cell", {"trial": "t3"}, match={"trial": "t3"})
    box.log_batch(run, {"acc": 0.2}, step=1, timestamp_ms=5)
    client.lose_answers = False
    assert box.flush()
    runs = client.real.search_runs([exp], "tags.trial = 't3'")
    assert len(runs) == 1 and history(client, runs[0].info.run_id, "acc") == [(1, 0.2, 5)]


def test_a_later_session_writes_what_a_crashed_one_left(store, tmp_path):
    client, exp = store
    first = TrackingOutbox(client, tmp_path / "outbox")
    run = first.create_run(exp, "r", {"trial": "t4"}, match={"trial": "t4"})
    client.down = True
    first.log_batch(run, {"acc": 0.3}, step=1, timestamp_ms=7)
    first.log_batch(run, {"acc": 0.4}, step=2, timestamp_ms=8)
    client.down = False
    first.ops[0]["replayed"] = True  # first op applied, then the process died before saving
    first._try(first.ops[0])
    second = TrackingOutbox(client, tmp_path / "outbox")  # e.g. --resume or report --sync
    assert second.pending == 2 and second.flush()
    assert history(client, run, "acc") == [(1, 0.3, 7), (2, 0.4, 8)]  # no duplicate of step 1


def test_a_final_rejection_is_dropped_not_blocking(store, tmp_path, capsys):
    client, exp = store
    box = TrackingOutbox(client, tmp_path / "outbox")
    run = box.create_run(exp, "r", {}, match={})
    box.log_batch(run, params={"lr": "0.1"})
    box.log_batch(run, params={"lr": "0.2"})  # MLflow: params are immutable
    box.log_batch(run, {"acc": 1.0}, step=1)
    assert box.pending == 0 and "rejected log_batch" in capsys.readouterr().err
    assert history(client, run, "acc")[0][:2] == (1, 1.0)


def test_a_cut_or_tampered_outbox_is_read_as_untrusted(store, tmp_path, capsys):
    """The outbox lives in storage others may write: a crash-cut line is skipped, and an
    artifact is never uploaded from outside the outbox (no exfiltration of local files)."""
    client, exp = store
    run = client.real.create_run(exp).info.run_id
    box_dir = tmp_path / "outbox"
    box_dir.mkdir()
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "id_rsa").write_text("KEY")
    ops = [{"op": "log_batch", "run": run, "metrics": [["acc", 0.5, 3, 1]], "params": [],
            "tags": [], "seq": 1},
           {"op": "log_artifacts", "run": run, "src": str(secret), "path": "x", "seq": 2},
           {"op": "exec", "cmd": "rm -rf /", "seq": 3}]
    (box_dir / "outbox.jsonl").write_text("\n".join(json.dumps(o) for o in ops)
                                          + '\n{"op": "log_batch", "ru')
    box = TrackingOutbox(client, box_dir)
    assert [op["seq"] for op in box.ops] == [1]
    assert "outside the outbox" in capsys.readouterr().err
    assert box.flush() and history(client, run, "acc") == [(1, 0.5, 3)]
    assert client.real.list_artifacts(run) == []


def test_a_line_cut_before_the_done_mark_does_not_shift_what_is_pending(store, tmp_path):
    """outbox.state counts the written ops; a skipped line must not make a later session
    replay a written op or skip a pending one (pending = seq above the done mark)."""
    client, exp = store
    run = client.real.create_run(exp).info.run_id
    box_dir = tmp_path / "outbox"
    box_dir.mkdir()
    ops = [{"op": "log_batch", "run": run, "metrics": [["acc", v, 10 + i, i]], "params": [],
            "tags": [], "seq": i} for i, v in ((1, 0.1), (2, 0.2), (3, 0.3))]
    lines = [json.dumps(o) for o in ops]
    lines[0] = lines[0][:25]  # seq 1 was written, then its line was cut
    (box_dir / "outbox.jsonl").write_text("\n".join(lines) + "\n")
    (box_dir / "outbox.state").write_text(json.dumps({"done": 2, "ids": {}}))
    box = TrackingOutbox(client, box_dir)
    assert [op["seq"] for op in box.ops] == [3]
    assert box.flush() and history(client, run, "acc") == [(3, 0.3, 13)]
