"""Tracking that survives an MLflow outage: every write goes through an on-disk outbox.

The sweep logs to MLflow from the driver, inside Ray Tune's loop. A tracking server that is
down (or a tracking database on a full disk) used to block that loop for minutes inside
MLflow's retries and then kill the sweep with a traceback. Here a write that fails for a
reason that may pass (connection refused, timeout, 5xx, a full or locked database) does not
propagate: the write, and every later one, is appended to ``outbox.jsonl`` in the experiment
directory, training goes on, and the outbox is retried every ``retry_s`` seconds and at the
end. Writes keep their order and their original timestamps, and every replayed operation is
idempotent, so nothing reaches MLflow twice:

- metrics carry the timestamp of the original report; MLflow's SQL store skips an identical
  (key, value, timestamp, step) that it already holds (a request whose answer was lost);
- params, tags, statuses and artifacts overwrite with the same values;
- a run created while offline gets a placeholder id; on replay the run is first searched by
  its identifying tags (``match``) and created only if absent, and the placeholder is mapped.

What is written, and how much of it is done, is on disk (``outbox.jsonl`` + ``outbox.state``),
so a crashed or interrupted sweep leaves it for ``--resume`` or ``report --sync`` to write.
A rejection that is final (an invalid parameter, a deleted run) is not an outage: that one
write is dropped with a warning, so it cannot block the writes behind it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainables.bounded_read import UnreadableInput, decode_utf8, read_regular
from trainables.excerpt import excerpt

OUTBOX_DIR = "tracking-outbox"
"""Its name in a sweep's state directory (orchestrator.driver.names.state_dir)."""
OPS_FILE = "outbox.jsonl"
STATE_FILE = "outbox.state"
ARTIFACTS = "artifacts"
PENDING_PREFIX = "pending-"
RETRY_S = 30.0
MAX_OUTBOX_BYTES = 1 << 30
OPERATIONS = ("create_run", "log_batch", "log_dict", "log_artifacts", "log_artifact", "set_tag",
              "delete_tag", "set_terminated", "update_run")
FINAL_REJECTIONS = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE",
                    "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST", "PERMISSION_DENIED",
                    "UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED")
"""MLflow error codes that will not pass by waiting (everything else counts as an outage)."""


def _parse_op(line: str) -> dict[str, Any] | None:
    """One outbox line, or None for a blank, cut or foreign one."""
    try:
        op = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(op, dict) and op.get("op") in OPERATIONS and isinstance(op.get("seq"), int)
    return op if ok else None


def is_outage(err: BaseException) -> bool:
    """True when retrying later may succeed (the store is unreachable, busy, full)."""
    if isinstance(err, MlflowException):
        return getattr(err, "error_code", "") not in FINAL_REJECTIONS
    # requests' errors are OSErrors; a SQL store raises sqlalchemy's (disk full, locked).
    return isinstance(err, OSError) or type(err).__module__.startswith("sqlalchemy")


class TrackingOutbox:
    """MLflow writes of one sweep, in order, buffered on disk while the store is unreachable."""

    def __init__(self, client: MlflowClient, directory: str | Path, *, retry_s: float = RETRY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.dir = Path(directory)
        self.retry_s = retry_s
        self.clock = clock
        self.ops: list[dict[str, Any]] = []  # pending, in order
        self.ids: dict[str, str] = {}  # placeholder -> real run id
        self.next_seq, self.done = 1, 0
        self.last_error = ""
        self._last_try = -float("inf")
        self._disk_warned = False
        self._load()

    # -- what callers use -------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self.ops)

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str],
                   match: dict[str, str], search_first: bool = False) -> str:
        """The run id, or a placeholder while offline. ``match``: the tags that identify the
        run, used to find it instead of creating it twice."""
        op = {"op": "create_run", "key": f"{PENDING_PREFIX}{uuid.uuid4().hex}",
              "experiment_id": experiment_id, "run_name": run_name, "tags": tags, "match": match,
              "search_first": search_first}
        self._submit(op)
        return self.ids.get(op["key"], op["key"])

    def log_batch(self, run_id: str, metrics: dict[str, float] | None = None, step: int = 0,
                  params: dict[str, str] | None = None, tags: dict[str, str] | None = None,
                  timestamp_ms: int | None = None) -> None:
        now = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        self._submit({"op": "log_batch", "run": run_id,
                      "metrics": [[k, float(v), now, int(step)] for k, v in (metrics or {}).items()],
                      "params": sorted((params or {}).items()), "tags": sorted((tags or {}).items())})

    def log_dict(self, run_id: str, data: Any, file: str) -> None:
        self._submit({"op": "log_dict", "run": run_id, "data": data, "file": file})

    def log_artifacts(self, run_id: str, local_dir: str | Path, path: str) -> None:
        """Online: uploaded now. Offline: copied into the outbox first (Tune may delete the
        original, e.g. an older checkpoint), then uploaded from there."""
        op = {"op": "log_artifacts", "run": run_id, "src": str(local_dir), "path": path}
        if self.ops or not self._try(op):
            copy = self.dir / ARTIFACTS / f"{self.next_seq:06d}"
            shutil.copytree(local_dir, copy, dirs_exist_ok=True)
            self._append({**op, "src": str(copy)})

    def log_artifact(self, run_id: str, local_file: str | Path, path: str) -> None:
        """One file, like log_artifacts (copied into the outbox while offline)."""
        op = {"op": "log_artifact", "run": run_id, "src": str(local_file), "path": path}
        if self.ops or not self._try(op):
            copy = self.dir / ARTIFACTS / f"{self.next_seq:06d}" / Path(local_file).name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local_file, copy)
            self._append({**op, "src": str(copy)})

    def set_tag(self, run_id: str, key: str, value: str = "", value_run: str | None = None) -> None:
        """A tag; ``value_run``: the value is that run's id (a placeholder resolves on replay)."""
        self._submit({"op": "set_tag", "run": run_id, "key": key, "value": value,
                      "value_run": value_run})

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove a tag if present (absent is not an error)."""
        self._submit({"op": "delete_tag", "run": run_id, "key": key})

    def set_terminated(self, run_id: str, status: str) -> None:
        self._submit({"op": "set_terminated", "run": run_id, "status": status,
                      "end_time": int(time.time() * 1000)})

    def update_run(self, run_id: str, status: str) -> None:
        self._submit({"op": "update_run", "run": run_id, "status": status})

    def tick(self) -> None:
        """Retry the pending writes if ``retry_s`` passed since the last try (cheap otherwise)."""
        if self.ops and self.clock() - self._last_try >= self.retry_s:
            self.flush()

    def flush(self) -> bool:
        """Write every pending operation, in order; True when none is left."""
        self._last_try = self.clock()
        while self.ops:
            if not self._try(self.ops[0]):
                return False
            self.ops.pop(0)
            self.done += 1
            self._save_state()
        self._clear()
        return True

    def resolve(self, run_id: str) -> str:
        """The real id of a run created offline, once known (else the placeholder)."""
        return self.ids.get(run_id, run_id)

    def describe_pending(self) -> str:
        kinds: dict[str, int] = {}
        for op in self.ops:
            kinds[op["op"]] = kinds.get(op["op"], 0) + 1
        return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))

    # -- mechanics --------------------------------------------------------------------------
    def _submit(self, op: dict[str, Any]) -> None:
        if self.ops:  # keep the order: behind whatever is already waiting
            self._append(op)
            self.tick()
        elif not self._try(op):
            self._append(op)

    def _try(self, op: dict[str, Any]) -> bool:
        """Apply one operation; False on an outage (remembered), True when done or dropped."""
        try:
            self._apply(op)
            return True
        except Exception as err:  # MLflow, requests and sqlalchemy errors all end up here
            if not is_outage(err):
                print(f"warning: MLflow rejected {op['op']} for run {op.get('run', '-')}: "
                      f"{str(err)[:200]}; dropped", file=sys.stderr)
                return True
            if not self.last_error:
                print(f"warning: MLflow unreachable ({str(err)[:160]}); tracking continues in "
                      f"{self.dir} and is retried every {self.retry_s:.0f} s", file=sys.stderr)
            self.last_error = str(err)[:300]
            self._last_try = self.clock()
            return False

    def _apply(self, op: dict[str, Any]) -> None:
        kind, client = op["op"], self.client
        run = self.resolve(op.get("run", ""))
        if run.startswith(PENDING_PREFIX):  # its create_run was dropped as a final rejection
            raise MlflowException(f"run {run} was never created", error_code="INVALID_STATE")
        if kind == "create_run":
            self.ids[op["key"]] = self._find_or_create(op)
        elif kind == "log_batch":
            client.log_batch(run, metrics=[Metric(k, v, t, s) for k, v, t, s in op["metrics"]],
                             params=[Param(k, v) for k, v in op["params"]],
                             tags=[RunTag(k, v) for k, v in op["tags"]])
        elif kind == "log_dict":
            client.log_dict(run, op["data"], op["file"])
        elif kind == "log_artifacts":
            client.log_artifacts(run, op["src"], op["path"])
        elif kind == "log_artifact":
            client.log_artifact(run, op["src"], op["path"])
        elif kind == "set_tag":
            value = self.resolve(op["value_run"]) if op.get("value_run") else op["value"]
            if value.startswith(PENDING_PREFIX):
                raise MlflowException(f"run {value} was never created", error_code="INVALID_STATE")
            client.set_tag(run, op["key"], value)
        elif kind == "delete_tag":
            if op["key"] in client.get_run(run).data.tags:
                client.delete_tag(run, op["key"])
        elif kind == "set_terminated":
            client.set_terminated(run, op["status"], end_time=op["end_time"])
        elif kind == "update_run":
            client.update_run(run, status=op["status"])
        else:
            raise MlflowException(f"unknown outbox operation {kind!r}", error_code="BAD_REQUEST")

    def _find_or_create(self, op: dict[str, Any]) -> str:
        if op.get("search_first") or op.get("replayed"):
            found = self.client.search_runs([op["experiment_id"]], " and ".join(
                f"tags.`{k}` = '{v}'" for k, v in sorted(op["match"].items())), max_results=1)
            if found:
                return found[0].info.run_id
        op["replayed"] = True  # if this create's answer is lost, the next try searches first
        run = self.client.create_run(op["experiment_id"], run_name=op["run_name"], tags=op["tags"])
        return run.info.run_id

    def _append(self, op: dict[str, Any]) -> None:
        op = {**op, "seq": self.next_seq, "replayed": True}
        self.next_seq += 1
        self.ops.append(op)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.dir / OPS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(op) + "\n")
        except OSError as err:  # e.g. the same full disk: keep it in memory, say so once
            if not self._disk_warned:
                self._disk_warned = True
                print(f"warning: cannot keep the tracking outbox on disk ({err}); pending "
                      f"MLflow writes are held in memory only", file=sys.stderr)

    def _save_state(self) -> None:
        if not (self.dir / OPS_FILE).is_file():
            return  # held in memory only (see _append)
        tmp = self.dir / (STATE_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps({"done": self.done, "ids": self.ids}))
            os.replace(tmp, self.dir / STATE_FILE)
        except OSError:
            pass  # replaying a done op is harmless (idempotent); only progress is not recorded

    def _load(self) -> None:
        """Pick up what an earlier session left (its ops after ``done``).

        The outbox sits in storage other people may write to, so it is read as untrusted: a
        line cut by a crash or not of this format is skipped (with a warning), and an artifact
        is uploaded only from the outbox's own copies (never from elsewhere on this machine).
        """
        ops_file = self.dir / OPS_FILE
        if not ops_file.is_file():
            return
        try:
            state = json.loads(decode_utf8(read_regular(self.dir / STATE_FILE, 1 << 20))) \
                if (self.dir / STATE_FILE).exists() else {}
            self.done, self.ids = int(state.get("done", 0)), {
                str(k): str(v) for k, v in dict(state.get("ids", {})).items()}
            text = decode_utf8(read_regular(ops_file, MAX_OUTBOX_BYTES))
        except (UnreadableInput, ValueError, TypeError, AttributeError) as err:
            print(f"warning: tracking outbox {self.dir} is unreadable ({err}); ignored",
                  file=sys.stderr)
            return
        lines = [op for op in map(_parse_op, text.splitlines()) if op is not None]
        # seqs run 1, 2, ... from the file's start and are written in order, so ``done`` is
        # also the last written seq: a skipped (cut, foreign) line cannot shift what is pending
        self.ops = [op for op in lines if op["seq"] > self.done and self._trusted(op)]
        self.next_seq = (lines[-1]["seq"] + 1) if lines else 1

    def _trusted(self, op: dict[str, Any]) -> bool:
        if op["op"] in ("log_artifacts", "log_artifact"):
            own = (self.dir / ARTIFACTS).resolve()
            if not Path(str(op.get("src", ""))).resolve().is_relative_to(own):
                print(f"warning: tracking outbox {self.dir}: an artifact outside the outbox "
                      f"({excerpt(op.get('src'))}) was not uploaded", file=sys.stderr)
                return False
        return True

    def _clear(self) -> None:
        """Nothing pending: remove the outbox (its copies of artifacts included)."""
        if self.dir.is_dir() and (self.dir / OPS_FILE).exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        self.ops, self.done, self.next_seq, self.last_error = [], 0, 1, ""
