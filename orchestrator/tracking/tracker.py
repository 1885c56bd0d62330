"""MLflow tracking of a sweep: one experiment per sweep name, one parent run per sweep.

The sweep calls, in order: ``preflight()`` before Ray starts (so an unreachable or read-only
tracking store costs nothing: no trial has trained yet), ``start()`` (the parent run; a resumed
sweep reuses its parent), ``callback()`` for the Tuner (one nested child run per trial, see
``orchestrator.tracking.mlflow_runs``), and ``finish(status)``.

Tracking URI: an explicit option, else ``MLFLOW_TRACKING_URI``, else an embedded sqlite store
``sqlite:///<cwd>/mlflow.db``. Everything goes through an explicit ``MlflowClient``; nothing
touches MLflow's global state (``mlflow.set_experiment`` would set MLFLOW_EXPERIMENT_ID).
"""
from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from importlib import metadata
from pathlib import Path

from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request

from orchestrator.costs.totals import SweepCost, runs_from_mlflow, sweep_cost
from orchestrator.costs.trial import CostBook
from orchestrator.driver.names import under
from orchestrator.tracking.mlflow_runs import (
    TAG_PARENT,
    TAG_REPLACED_BY,
    TAG_ROLE,
    TAG_SPACE,
    TrialRunLogger,
    mark_replaced,
)
from orchestrator.tracking.outbox import TrackingOutbox, is_outage
from trainables.excerpt import one_line

# The runs-table view published on the experiment (MLflow UI "shared view", an experiment tag):
# the trial runs of the latest sweep, with the columns a comparison needs, best first.
VIEW_KEY = "sweep"
VIEW_METRICS = ("trainable_fraction", "fraction_of_baseline", "trainable_params", "lora_params",
                "best_val_acc", "test_acc", "best_epoch", "stopped_at_epoch", "diverged",
                "retuned", "wall_time_s", "gpu_seconds", "cpu_seconds", "cost_usd")
VIEW_PARAMS = ("method", "sublayer", "rank", "llm", "benchmark", "lr", "epochs")
PACKAGES = ("torch", "ray", "transformers", "peft", "mlflow", "optuna")
REACH_TIMEOUT_S = 5
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
FINAL_FLUSH_WAIT_S = 120.0
"""At the end, how long the sweep keeps retrying writes an outage held back."""
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
"""The driver's MLflow HTTP client gives up after ~20 s instead of MLflow's minutes of retries
(7 retries, 120 s timeouts): the outbox retries later without blocking Tune's loop."""


class TrackingError(RuntimeError):
    """The tracking store cannot be used for this sweep; the message names the URI and the fix."""


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """Option, else MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db (absolute: Ray workers
    and a later ``mlflow ui`` must find the same file whatever their working directory)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_reachable(uri: str) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when an HTTP server does not answer
    an authenticated read; for a sqlite store, check the database's directory is writable."""
    if uri.startswith(("http://", "https://")):
        try:
            response = http_request(get_default_host_creds(uri),
                                    "/api/2.0/mlflow/experiments/search", "POST",
                                    json={"max_results": 1}, max_retries=0,
                                    timeout=REACH_TIMEOUT_S, raise_on_status=False)
        except Exception as exc:  # connection refused, DNS, timeout: all mean "unreachable"
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({exc}); start it or "
                                f"pass another --tracking-uri. Nothing was trained.") from exc
        if response.status_code != 200:
            raise TrackingError(f"MLflow tracking server {uri} answered HTTP "
                                f"{response.status_code} "
                                f"({response.text[:200]!r}); check the URI and credentials "
                                f"(MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN). Nothing was trained.")
    elif uri.startswith("sqlite:///"):
        database = Path(uri[len("sqlite:///"):])
        if database.exists() and not database.is_file():
            raise TrackingError(f"tracking store {uri}: {database} is a directory or a special "
                                f"file, not a database. Nothing was trained.")
        directory = database.parent
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise TrackingError(f"tracking store {uri}: directory {directory} does not exist or is "
                                f"not writable. Nothing was trained.")


def _artifact_location(uri: str, experiment_name: str) -> str | None:
    """Artifacts of a sqlite store go next to the database (MLflow's default, ./mlruns of
    whatever directory the driver runs in, scatters them); a server decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment_name)
    root = Path(uri[len("sqlite:///"):]).parent / "mlartifacts"
    return str(under(root, safe, what="MLflow artifact directory"))  # never the root or above


def runs_view_url(uri: str, experiment_id: str) -> str:
    """The experiment's runs table with the sweep's columns (the view published by start())."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return (f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
            f"&workflowType=machine_learning")


def git_commit() -> str:
    """The commit of the code that ran, with '-dirty' when the tree has local changes."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class SweepTracker:
    """The MLflow side of one sweep: experiment, parent run, the Tune callback, the end."""

    def __init__(self, tracking_uri: str | None, experiment_name: str, space_name: str,
                 argv: list[str], seed: int, resume: bool,
                 outbox_dir: str | Path | None = None) -> None:
        if not experiment_name:
            raise TrackingError("the MLflow experiment name (the sweep name) must not be empty")
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self._uri_source = "" if tracking_uri else " (from $MLFLOW_TRACKING_URI)" \
            if os.environ.get("MLFLOW_TRACKING_URI") else " (the default)"
        self.experiment_name = experiment_name
        self.space_name = space_name
        self.argv = list(argv)
        self.seed = seed
        self.resume = resume
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._client: MlflowClient | None = None
        # Where writes wait while the store is unreachable (the sweep: its experiment directory).
        self.outbox_dir = Path(outbox_dir) if outbox_dir is not None else \
            Path(tempfile.gettempdir()) / f"sweep-outbox-{uuid.uuid4().hex[:8]}"
        self._outbox: TrackingOutbox | None = None
        self._logger: TrialRunLogger | None = None
        for key, value in HTTP_DEFAULTS.items():  # unless the user set them: see HTTP_DEFAULTS
            os.environ.setdefault(key, value)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def preflight(self) -> None:
        """Before Ray starts: the store answers, accepts writes, and the experiment fits."""
        check_reachable(self.tracking_uri)
        try:
            self.experiment_id = self._experiment()
            # A cheap write that proves write access (and records when the sweep last started).
            self.client.set_experiment_tag(self.experiment_id, "sweep.preflight_at",
                                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        except MlflowException as exc:
            raise TrackingError(f"tracking store {self.tracking_uri}{self._uri_source}: cannot "
                                f"create or write experiment {self.experiment_name!r}: "
                                f"{one_line(exc.message, 240)}. Nothing was trained.") from exc

    def _experiment(self) -> str:
        """Create the experiment, or reuse it when it holds the same sweep space (or resuming)."""
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            # kind: the UI opens a model-training experiment on its runs table, not on GenAI traces.
            tags = {TAG_SPACE: self.space_name, "mlflow.experimentKind": "custom_model_development"}
            return self.client.create_experiment(self.experiment_name, _artifact_location(
                self.tracking_uri, self.experiment_name), tags=tags)
        if exp.lifecycle_stage != "active":
            raise TrackingError(f"MLflow experiment {self.experiment_name!r} at "
                                f"{self.tracking_uri} "
                                f"is deleted; restore it (mlflow experiments restore) or choose "
                                f"another sweep name.")
        used = exp.tags.get(TAG_SPACE)
        if used not in (None, self.space_name) and not self.resume:
            raise TrackingError(f"MLflow experiment {self.experiment_name!r} at "
                                f"{self.tracking_uri} "
                                f"already holds sweep space {used!r}, not {self.space_name!r}; "
                                f"choose another sweep name or resume that sweep.")
        if used is None:
            self.client.set_experiment_tag(exp.experiment_id, TAG_SPACE, self.space_name)
        return exp.experiment_id

    def start(self) -> str:
        """The parent run id: a resumed sweep reuses its latest parent, never creates another."""
        if self.experiment_id is None:
            self.preflight()
        if self.outbox.pending:  # what an earlier, interrupted session could not write
            left = self.outbox.pending
            done = self.outbox.flush()
            print(f"MLflow: {'wrote' if done else 'could not yet write'} {left} updates an earlier "
                  f"session left in {self.outbox.dir}", file=sys.stderr)
        if self.resume:
            parents = self.client.search_runs(
                [self.experiment_id], f"tags.`{TAG_ROLE}` = 'parent'", max_results=1,
                order_by=["attributes.start_time DESC"])
            if parents:
                self.parent_run_id = parents[0].info.run_id
                self.client.update_run(self.parent_run_id, status="RUNNING")
                self.client.log_batch(self.parent_run_id, tags=[
                    RunTag("sweep.resumed_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                    RunTag("sweep.resume_command", " ".join(self.argv)[:8000])])
                return self.parent_run_id
        self.parent_run_id = self._create_parent()
        self._publish_view()
        return self.parent_run_id

    def _publish_view(self) -> None:
        """Store the runs-table view of this sweep on the experiment (what the UI's "share view"
        stores), so opening runs_view_url shows the trials with the comparison columns."""
        columns = ([f"metrics.`{m}`" for m in VIEW_METRICS]
                   + [f"params.`{p}`" for p in VIEW_PARAMS] + ["tags.`status`", "tags.`cell_id`"])
        view = {"searchFilter": f"tags.`{TAG_PARENT}` = '{self.parent_run_id}'",
                "orderByKey": "metrics.`best_val_acc`", "orderByAsc": False,
                "selectedColumns": columns}
        self.client.set_experiment_tag(self.experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}",
                                       json.dumps(view))

    def _create_parent(self) -> str:
        commit = git_commit()
        tags = {TAG_ROLE: "parent", TAG_SPACE: self.space_name, "mlflow.source.git.commit": commit,
                "mlflow.source.name": " ".join(self.argv)[:500]}
        run = self.client.create_run(self.experiment_id, run_name=f"sweep {self.space_name}",
                                     tags=tags)
        versions = package_versions()
        params = {"space": self.space_name, "seed": str(self.seed), "git_commit": commit,
                  "command": " ".join(self.argv)[:6000], "host": socket.gethostname(),
                  "platform": platform.platform(), "python_executable": sys.executable,
                  **{f"version.{k}": v for k, v in versions.items()}}
        note = (f"Sweep of space `{self.space_name}`: one nested run per trial. Compare them in "
                f"the runs table ({runs_view_url(self.tracking_uri, self.experiment_id)}); "
                f"Table 1 and Figure 2 (accuracy vs trainable fraction, Pareto front) are this "
                f"run's artifacts under `report/`.")
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()],
                              tags=[RunTag("mlflow.note.content", note)])
        self.client.log_dict(run.info.run_id, {"argv": self.argv, **params}, "sweep.json")
        return run.info.run_id

    @property
    def outbox(self) -> TrackingOutbox:
        if self._outbox is None:
            self._outbox = TrackingOutbox(self.client, self.outbox_dir)
        return self._outbox

    def callback(self, costs: CostBook | None = None) -> TrialRunLogger:
        """The driver-side Tune callback that logs one nested child run per trial (with its
        cost, priced by ``costs``: orchestrator.costs.trial)."""
        if self.parent_run_id is None:
            raise TrackingError("SweepTracker.start() must run before callback()")
        self._logger = TrialRunLogger(self.tracking_uri, self.experiment_id, self.parent_run_id,
                                      self.space_name, self.outbox, costs)
        return self._logger

    def sweep_cost(self, retune_samples: int | None) -> SweepCost | None:
        """Totals and savings over every child run of this sweep (also those of earlier
        attempts of a resumed sweep), logged as metrics of the parent run. None while the
        store is unreachable: the trials' costs are then still in the outbox, not in MLflow."""
        try:
            if not self.outbox.flush():
                return None
            runs = runs_from_mlflow(self.client, self.experiment_id, self.parent_run_id)
        except Exception as err:
            if is_outage(err):
                return None
            raise
        cost = sweep_cost(runs, retune_samples)
        self.outbox.log_batch(self.parent_run_id, cost.metrics())
        return cost

    def mark_replaced(self, cell: str, original_trial_id: str,
                      replacement_trial_id: str | None) -> None:
        """Record the retune decision on the grid run (orchestrator.tracking.mlflow_runs.mark_replaced)."""
        if self.parent_run_id is None:
            raise TrackingError("SweepTracker.start() must run before mark_replaced()")
        logger = self._logger
        original = logger.run_id_of(original_trial_id) if logger else None
        if original is None:  # not a run of this session: look it up (needs the store)
            mark_replaced(self.client, self.experiment_id, self.parent_run_id, cell,
                          original_trial_id, replacement_trial_id)
            return
        replacement = logger.run_id_of(replacement_trial_id) if replacement_trial_id else None
        if replacement is None:
            self.outbox.delete_tag(original, TAG_REPLACED_BY)
        else:
            self.outbox.set_tag(original, TAG_REPLACED_BY, value_run=replacement)

    def finish(self, status: str) -> None:
        """End the parent run; children left running by an interrupted sweep end as KILLED.

        Written through the outbox, after everything already waiting there (so a child's
        FINISHED that was queued during an outage is not overtaken by a KILLED)."""
        status = status.upper()
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; allowed: {', '.join(RUN_STATUSES)}")
        if self.parent_run_id is None:
            return
        for run_id in self._running_children():
            self.outbox.set_tag(run_id, "status", "interrupted")
            self.outbox.set_terminated(run_id, "KILLED")
        self.outbox.set_terminated(self.parent_run_id, status)

    def _running_children(self) -> list[str]:
        """Child runs still RUNNING: from the store when it answers (runs of earlier sessions
        too), else the runs this session opened and did not end."""
        own = self._logger.open_runs() if self._logger else []
        if not self.outbox.flush():
            return own
        try:
            running = self.client.search_runs(
                [self.experiment_id],
                f"tags.`{TAG_PARENT}` = '{self.parent_run_id}' and attributes.status = 'RUNNING'",
                max_results=1000)
        except Exception as err:
            if not is_outage(err):
                raise
            return own
        return list(dict.fromkeys([r.info.run_id for r in running] + own))

    def close(self, wait_s: float = FINAL_FLUSH_WAIT_S, poll_s: float = 10.0) -> int:
        """Write what is pending, retrying for up to ``wait_s``; returns what is still pending."""
        deadline = time.monotonic() + wait_s
        while not self.outbox.flush() and time.monotonic() < deadline:
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        return self.outbox.pending

    def describe(self) -> str:
        """One line for the sweep's log: where to look."""
        return json.dumps({"tracking_uri": self.tracking_uri, "experiment": self.experiment_name,
                           "experiment_id": self.experiment_id, "parent_run": self.parent_run_id})
