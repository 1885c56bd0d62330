"""One nested MLflow run per Ray Tune trial, logged from the driver.

The Tune driver already receives every result a trial reports, so logging there means worker
nodes need no tracking access (no credentials, no route to the tracking server). All writes
go through an explicit ``MlflowClient`` (never the fluent, process-global active run: the
driver may run other things concurrently) and in batches (``log_batch``: one request per
report) so that tracking stays a small share of a sweep of many short trials.

The tag names below are the contract with ``orchestrator.results.report``, which reads everything
back from MLflow.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import ray
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from orchestrator.costs.trial import CostBook, bundle_resources, mean
from orchestrator.results.model import ERROR, TrialResult, status_of
from orchestrator.tracking.outbox import PENDING_PREFIX, TrackingOutbox, is_outage
from trainables.cell import Cell, parse_cell_id
from trainables.config import TrialConfig
from trainables.predictions import FILE_NAME as PREDICTIONS_FILE

# Tags (child runs carry what Table 1 needs; the parent is found by its role).
TAG_PARENT = "mlflow.parentRunId"
TAG_ROLE = "sweep.role"  # "parent" | "trial"
TAG_SPACE = "sweep.space"
TAG_TRIAL_ID = "sweep.trial_id"
TAG_CELL = "cell_id"
TAG_GROUP = "group"
TAG_STATUS = "status"  # running | finished | stopped | diverged | error | interrupted
TAG_RETUNE_OF = "retune_of"
TAG_REPLACED_BY = "replaced_by"
TAG_TEST_FROM = "test_scored_from"  # "checkpoint": a stopped trial scored after the phase
TAG_NODE_TYPE = "node_type"  # where the trial was placed (orchestrator.placement), when known

# What a trial reports (docs/ARCHITECTURE.md "Reports a trial makes"); nothing else is logged.
EPOCH_METRICS = ("train_loss", "val_acc", "best_val_acc", "val_gold_nll", "val_choice_nll", "lr",
                 "samples_per_s", "epoch_time_s", "checkpoint_mb", "peak_memory_gib",
                 # cumulative per trial, absent without the cache (definitions: trainables.vision_features
                 # CachedInputs.metrics; seconds_saved = ViT seconds the hits avoided - cache cost)
                 "vit_cache_hits", "vit_cache_misses", "vit_cache_seconds_saved")
FIRST_METRICS = ("trainable_params", "total_params", "trainable_fraction", "fraction_of_baseline",
                 "qformer_trainable_fraction", "lora_params_qformer", "lora_params_llm",
                 # what ran after fitting the memory budget (trainables.runsetup.RunSettings)
                 "micro_batch_size", "grad_accum_steps", "eval_batch_size_used",
                 "activation_checkpointing_on", "est_peak_memory_gib")
FINAL_METRICS = ("test_acc", "test_gold_nll", "test_choice_nll", "best_epoch")
CATEGORY_PREFIX = "test_acc/"
"""Final per-category test accuracies, e.g. test_acc/NAT (trainables.predictions)."""
PREDICTIONS_ARTIFACT = "predictions"
"""Artifact folder of a trial's predictions.parquet (trainables.predictions)."""
PARAM_KEYS = ("method", "sublayer", "rank", "llm", "init", "benchmark", "lr", "epochs", "batch_size",
              "grad_accum", "seed", "adapter", "alpha",
              "weight_dtype", "activation_checkpointing", "random_weights")


def trial_result(run: Run) -> TrialResult:
    """Read one trial run back (the layout this module writes) as the results model's trial.
    Raises ValueError when the run has no valid cell id tag."""
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    lr = p.get("lr")
    return TrialResult(
        cell=parse_cell_id(t.get(TAG_CELL, "")), status=t.get(TAG_STATUS, "unknown"),
        best_val_acc=m.get("best_val_acc"), test_acc=m.get("test_acc"),
        epochs_run=int(m.get("epoch", 0)), retune_of=t.get(TAG_RETUNE_OF) or None,
        lr=float(lr) if lr not in (None, "None") else None,
        trainable_fraction=m.get("trainable_fraction"), time_s=float(m.get("wall_time_s", 0.0)),
        run_id=run.info.run_id, name=run.info.run_name,
        seed=int(p["seed"]) if p.get("seed") not in (None, "None") else None)


def parse_config(config: dict[str, Any]) -> TrialConfig | None:
    """The trial's own config, parsed once at this side of the Ray boundary (keys that are not
    trial config fields, the sweep's bookkeeping, left out). None: a config TrialConfig rejects;
    the trial itself then fails with that error and its run is logged with the raw config."""
    known = {f.name for f in fields(TrialConfig)}
    try:
        return TrialConfig.from_dict({k: v for k, v in config.items() if k in known})
    except ValueError:
        return None


def run_name(config: dict[str, Any], cell: Cell | None) -> str:
    """The MLflow run name: what differs between a sweep's runs first (method/sublayer, rank),
    then where (benchmark, LLM), so the UI's narrow name column tells runs apart."""
    if cell is None:
        return "invalid trial config"
    name = f"{cell.row_label} r{cell.peft.rank} | {cell.benchmark} | {cell.llm}"
    seed = config.get("seed")
    if isinstance(seed, int) and seed != 0:  # --seeds N: the runs of one cell differ by seed
        name += f" | seed {seed}"
    if config.get("retune_of"):
        lr = config.get("lr")
        name += f" | retune lr={lr:.2g}" if isinstance(lr, float) else " | retune"
    return name


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """The trial config as the trial runs it: every None resolved to the preset's default, so a
    run says what actually ran, not "None" (a rejected config: as given)."""
    parsed = parse_config(config)
    return parsed.to_dict() if parsed else dict(config)


def _lora_metrics(result: dict[str, Any]) -> dict[str, float]:
    """lora_params may arrive as an int, a {part: count} dict, or flattened 'lora_params/part'."""
    parts: dict[str, float] = {}
    value = result.get("lora_params")
    if isinstance(value, dict):
        parts = {f"lora_params_{k}": float(v) for k, v in value.items()}
    for key, v in result.items():
        if key.startswith("lora_params/"):
            parts[f"lora_params_{key.split('/', 1)[1]}"] = float(v)
    if parts:
        return {"lora_params": sum(parts.values()), **parts}
    return {"lora_params": float(value)} if value is not None else {}


def result_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The meaningful metrics of one report (Ray's own bookkeeping keys are dropped)."""
    keys = EPOCH_METRICS + FIRST_METRICS + FINAL_METRICS
    metrics = {k: float(result[k]) for k in keys if result.get(k) is not None}
    metrics.update({k: float(v) for k, v in result.items()
                    if k.startswith(CATEGORY_PREFIX) and v is not None})
    if "diverged" in result:
        metrics["diverged"] = float(bool(result["diverged"]))
    metrics.update(_lora_metrics(result))
    return metrics


def find_trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str, cell: str,
                   trial_id: str) -> str | None:
    """The run id of one Tune trial of the sweep (None: it has no run)."""
    runs = client.search_runs(
        [experiment_id], f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.`{TAG_CELL}` = "
        f"'{cell}' and tags.`{TAG_TRIAL_ID}` = '{trial_id}'", max_results=2)
    return runs[0].info.run_id if runs else None


def mark_replaced(client: MlflowClient, experiment_id: str, parent_run_id: str, cell: str,
                  original_trial_id: str, replacement_trial_id: str | None) -> None:
    """Tag a grid trial's run ``replaced_by`` the retune run that took its place in the table.

    Called once the retunes have results (orchestrator.driver.retune decides which, if any, replaces
    the cell): a retune that lost leaves the grid run untagged. ``None`` removes a tag an
    earlier pass of a resumed sweep set, so the tag always states the latest decision.
    """
    original = find_trial_run(client, experiment_id, parent_run_id, cell, original_trial_id)
    if original is None:
        return
    replacement = None if replacement_trial_id is None else find_trial_run(
        client, experiment_id, parent_run_id, cell, replacement_trial_id)
    if replacement is not None:
        client.set_tag(original, TAG_REPLACED_BY, replacement)
    elif TAG_REPLACED_BY in client.get_run(original).data.tags:
        client.delete_tag(original, TAG_REPLACED_BY)


@dataclass
class _TrialRun:
    """Driver-side state of one trial's MLflow run."""

    run_id: str
    cell: str
    last_epoch: int = -1  # epochs at or below this are already logged (resume)
    ended: bool = False  # its final status was written (or queued in the outbox)
    diverged: bool = False
    started: float = field(default_factory=time.monotonic)
    samples_per_s: list[float] = field(default_factory=list)  # each epoch's training throughput


class TrialRunLogger(Callback):
    """Ray Tune callback: a nested child run per trial under the sweep's parent run.

    Keyed by the Tune trial id and the cell id (tags), so a resumed sweep finds and reuses its
    runs instead of duplicating them. Every write goes through the sweep's TrackingOutbox, so an
    unreachable tracking store never blocks or ends the Tune loop (orchestrator.tracking.outbox).
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str,
                 space_name: str, outbox: TrackingOutbox, costs: CostBook | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.space_name = space_name
        self._outbox: TrackingOutbox | None = outbox
        self.outbox_dir = outbox.dir  # an unpickled copy (a Tune restore) reopens the same one
        self.costs = costs or CostBook({}, {}, {})
        self._runs: dict[str, _TrialRun] = {}  # trial_id -> run
        self._existing: dict[tuple[str, str], Any] | None = None  # (trial_id, cell) -> Run
        self._existing_known = False  # False: the store did not answer; search before creating

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config (tuner.pkl); the outbox holds a client and this process's
        # state, so it is dropped: a restored copy reopens the outbox from its directory (the
        # sweep itself passes its own callbacks to a restore).
        state = dict(self.__dict__)
        state.update(_outbox=None, _runs={}, _existing=None)
        return state

    @property
    def outbox(self) -> TrackingOutbox:
        if self._outbox is None:
            self._outbox = TrackingOutbox(MlflowClient(self.tracking_uri), self.outbox_dir)
        return self._outbox

    @property
    def client(self) -> MlflowClient:
        return self.outbox.client

    def open_runs(self) -> list[str]:
        """Runs this session started and did not end (an interrupted sweep ends them KILLED)."""
        return [r.run_id for r in self._runs.values() if not r.ended]

    # -- Tune hooks -------------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        self._load_existing()
        self._tag_cluster()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.outbox.tick()  # retries pending writes every outbox.retry_s, cheap otherwise

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_run(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ensure_run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self._log_result(self._ensure_run(trial), result)

    def _log_result(self, run: _TrialRun, result: dict) -> None:
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        if epoch <= run.last_epoch:
            return  # already logged: a resumed trial repeating epochs, or the final result again
        run.last_epoch = epoch
        run.diverged |= bool(result.get("diverged", False))
        if result.get("samples_per_s") is not None:
            run.samples_per_s.append(float(result["samples_per_s"]))
        metrics = {"epoch": float(epoch), **result_metrics(result)}
        self.outbox.log_batch(run.run_id, metrics, step=epoch)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end_trial(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end_trial(trial, failed=True)

    # -- runs -------------------------------------------------------------------------------
    def _load_existing(self) -> None:
        """Index the parent's child runs once, so resumed trials reuse theirs. A store that does
        not answer leaves the index unknown: runs are then searched for before being created."""
        self._existing, self._existing_known = {}, False
        token = None
        try:
            while True:
                page = self.client.search_runs(
                    [self.experiment_id], f"tags.`{TAG_PARENT}` = '{self.parent_run_id}'",
                    max_results=1000, page_token=token)
                for run in page:
                    tags = run.data.tags
                    self._existing[(tags.get(TAG_TRIAL_ID, ""), tags.get(TAG_CELL, ""))] = run
                token = page.token
                if not token:
                    break
        except Exception as err:  # an outage here must not end the sweep (see outbox)
            if not is_outage(err):
                raise
            return
        self._existing_known = True

    def _tag_cluster(self) -> None:
        """Record the Ray cluster the sweep runs on (tags: they may change when resumed)."""
        if not ray.is_initialized():
            return
        res = ray.cluster_resources()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        tags = {"cluster.nodes": str(len(nodes)), "cluster.cpus": str(res.get("CPU", 0)),
                "cluster.gpus": str(res.get("GPU", 0))}
        self.outbox.log_batch(self.parent_run_id, tags=tags)

    def _ensure_run(self, trial: Any) -> _TrialRun:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        if self._existing is None:
            self._load_existing()
        parsed = parse_config(trial.config)
        config = parsed.to_dict() if parsed else dict(trial.config)
        cell_obj = parsed.cell if parsed else None
        cell = cell_obj.id if cell_obj else ""
        found = self._existing.get((trial.trial_id, cell))
        if found is not None:
            metrics = found.data.metrics
            run = _TrialRun(found.info.run_id, cell, last_epoch=int(metrics.get("epoch", -1)),
                            diverged=bool(metrics.get("diverged", 0)))
            self.outbox.update_run(run.run_id, status="RUNNING")
            self.outbox.set_tag(run.run_id, TAG_STATUS, "running")
        else:
            run = _TrialRun(self._create_run(trial.trial_id, config, cell_obj), cell)
        self._runs[trial.trial_id] = run
        return run

    def _create_run(self, trial_id: str, config: dict[str, Any], cell_obj: Cell | None) -> str:
        retune_of = config.get("retune_of")
        cell = cell_obj.id if cell_obj else ""
        tags = {TAG_PARENT: self.parent_run_id, TAG_ROLE: "trial", TAG_TRIAL_ID: trial_id,
                TAG_SPACE: self.space_name, TAG_CELL: cell, TAG_STATUS: "running",
                TAG_GROUP: cell_obj.group_id if cell_obj else ""}
        if retune_of:
            tags[TAG_RETUNE_OF] = str(retune_of)
        match = {TAG_PARENT: self.parent_run_id, TAG_TRIAL_ID: trial_id}
        run_id = self.outbox.create_run(self.experiment_id, run_name(config, cell_obj), tags,
                                        match, search_first=not self._existing_known)
        params = {k: str(config[k]) for k in PARAM_KEYS if k in config}
        self.outbox.log_batch(run_id, params=params)
        self.outbox.log_dict(run_id, config, "config.json")
        return run_id

    def _end_trial(self, trial: Any, failed: bool) -> None:
        run = self._ensure_run(trial)
        last = trial.last_result or {}
        if last:
            self._log_result(run, last)  # normally a no-op: Tune passed it to on_trial_result
        status = status_of(last, failed=failed, diverged=run.diverged)
        wall = last.get("time_total_s", time.monotonic() - run.started)
        final = {"diverged": float(run.diverged), "wall_time_s": float(wall),
                 "retuned": float(bool(trial.config.get("retune_of")))}
        if run.last_epoch >= 0:
            final["stopped_at_epoch"] = float(run.last_epoch)
        tags = {TAG_STATUS: status}
        cost = self.costs.trial_cost(run.cell, bundle_resources(trial), float(wall),
                                     mean(run.samples_per_s) or last.get("samples_per_s"))
        final.update(cost.metrics())
        if cost.node_type:
            tags[TAG_NODE_TYPE] = cost.node_type
        self.outbox.log_batch(run.run_id, final, step=max(run.last_epoch, 0), tags=tags)
        self._log_checkpoint(run.run_id, trial)
        self.outbox.set_terminated(run.run_id, "FAILED" if failed else "FINISHED")
        run.ended = True

    def log_unreported(self, config: TrialConfig, error: str) -> str:
        """A FAILED run for a grid trial Tune failed before it reported (no Tune trial object
        reaches the callbacks then: orchestrator.driver.unreported). Its trial-id tag says so."""
        run_id = self._create_run(f"unreported:{config.cell_id}:seed{config.seed}",
                                  config.to_dict(), config.cell)
        self.outbox.log_batch(run_id, {"diverged": 0.0, "wall_time_s": 0.0},
                              tags={TAG_STATUS: ERROR, "error": error[:500]})
        self.outbox.set_terminated(run_id, "FAILED")
        return run_id

    def _log_checkpoint(self, run_id: str, trial: Any) -> None:
        """Log the trial's latest (adapter-only, small) checkpoint directory as an artifact, and
        a finished trial's predictions.parquet (in that checkpoint) on its own."""
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        with checkpoint.as_directory() as local_dir:
            self.outbox.log_artifacts(run_id, local_dir, "checkpoint")
            predictions = Path(local_dir) / PREDICTIONS_FILE
            if predictions.is_file():
                self.outbox.log_artifact(run_id, str(predictions), PREDICTIONS_ARTIFACT)

    # -- test scores of stopped trials (orchestrator.stopped_scores) ----------------------------
    def _run_of(self, trial_id: str) -> Any:
        """The MLflow run of a Tune trial id (this sweep's parent), or None (no run, or the
        store does not answer)."""
        run_id = self.outbox.resolve(self.run_id_of(trial_id) or PENDING_PREFIX)
        if run_id.startswith(PENDING_PREFIX):
            return None
        try:
            return self.client.get_run(run_id)
        except Exception as err:  # an outage: callers fall back to what this session knows
            if not is_outage(err):
                raise
            return None

    def run_id_of(self, trial_id: str) -> str | None:
        """The MLflow run id of a Tune trial id (None: no run), without asking the store: a
        run of this session, or one of an earlier session of this sweep (resume)."""
        if trial_id in self._runs:
            return self._runs[trial_id].run_id
        if self._existing is None:
            self._load_existing()
        for (tid, _), run in self._existing.items():
            if tid == trial_id:
                return run.info.run_id
        return None

    def test_metrics(self, trial_id: str) -> dict[str, float]:
        """The final test metrics already logged for a trial (empty if none)."""
        run = self._run_of(trial_id)
        if run is None:
            return {}
        return {k: v for k, v in run.data.metrics.items()
                if k in FINAL_METRICS or k.startswith(CATEGORY_PREFIX)}

    def log_test_score(self, trial_id: str, metrics: dict[str, Any], predictions: bytes) -> None:
        """Log a stopped trial's test score and predictions (its status stays "stopped")."""
        run_id = self.run_id_of(trial_id)
        if run_id is None:
            raise KeyError(f"no MLflow run for trial {trial_id}")
        run = self._run_of(trial_id)
        own = self._runs.get(trial_id)
        step = int(run.data.metrics.get("epoch", 0)) if run else max(own.last_epoch, 0) if own \
            else 0
        self.outbox.log_batch(run_id, result_metrics(metrics), step=step,
                              tags={TAG_TEST_FROM: "checkpoint"})
        with tempfile.TemporaryDirectory() as tmp:  # the outbox copies it if it must wait
            path = Path(tmp) / PREDICTIONS_FILE
            path.write_bytes(predictions)
            self.outbox.log_artifact(run_id, str(path), PREDICTIONS_ARTIFACT)
