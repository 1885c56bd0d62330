"""A test score for every trial the scheduler stopped, right after its phase ends.

Why: a trial ASHA stops never reaches its final report, so its cell would have no test score
and Table 1 would fall back to a validation number (a different quantity). Its last checkpoint
(kept by Tune, num_to_keep=1) holds the best-validation state and that epoch's validation
scores, so ``trainables.rescore.score_stopped`` gives it exactly the final report it would have
made: the test split scored with the best-validation state, the category accuracies and the
predictions artifact. Cost and the alternative (scoring inside the trial) are weighed in
trainables.rescore.

The scoring runs as Ray tasks with the trials' own resources (CPUs, GPUs), at most
``max_concurrent`` at once, so it runs wherever the trials ran (the checkpoint is read from the
sweep's storage, local or s3://). Results go to the trial's MLflow run (metrics + predictions/
artifact; its status stays "stopped"). A trial whose run already holds ``test_acc`` (a resumed
sweep that scored it before) is not scored again.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainables.predictions import FILE_NAME as PREDICTIONS_FILE

FINAL_KEYS = ("best_epoch", "test_acc")
"""Keys only a trial's own final report has (docs/ARCHITECTURE.md)."""


def needs_score(result: Any) -> bool:
    """A trial the scheduler stopped: no final report, no error, not diverged, a checkpoint."""
    metrics = result.metrics or {}
    return (result.error is None and not metrics.get("diverged") and result.checkpoint is not None
            and not any(k in metrics for k in FINAL_KEYS))


def scorer_for(trainable: Callable) -> Callable | None:
    """How a trainable's stopped trials are scored: its ``score_stopped`` attribute (a test's
    fake trainable brings one for its fake checkpoints), else trainables.rescore's."""
    return getattr(trainable, "score_stopped", None)


def _score(config: dict[str, Any], checkpoint: Any,
           scorer: Callable | None) -> tuple[dict[str, Any], bytes]:
    """Ray task body: (final metrics, predictions.parquet bytes) of one stopped trial."""
    import torch

    if scorer is None:
        from trainables.rescore import score_stopped as scorer
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with checkpoint.as_directory() as ckpt, tempfile.TemporaryDirectory() as out:
        metrics = scorer(config, Path(ckpt), Path(out), device=device)
        return metrics, (Path(out) / PREDICTIONS_FILE).read_bytes()


def score_stopped_trials(results: Any, settings: Any, logger: Any,
                         scorer: Callable | None = None) -> dict[str, dict[str, Any]]:
    """Score every stopped trial of a ResultGrid; returns trial_id -> final metrics (those
    scored now and those a previous run of a resumed sweep scored)."""
    import ray

    from orchestrator.driver.tuner import trial_config
    scores: dict[str, dict[str, Any]] = {}
    todo = []
    for result in results:
        if not needs_score(result):
            continue
        trial_id = str(result.metrics.get("trial_id", ""))
        known = logger.test_metrics(trial_id)
        if "test_acc" in known:
            scores[trial_id] = known
        else:
            todo.append((trial_id, trial_config(result.config), result.checkpoint))
    if not todo:
        return scores
    print(f"scoring the test split of {len(todo)} trial(s) stopped early, from their checkpoints")
    task = ray.remote(_score)
    pending: dict[Any, str] = {}
    queue = list(todo)
    while queue or pending:
        while queue and len(pending) < settings.max_concurrent:
            trial_id, config, checkpoint = queue.pop(0)
            pending[_on_trial_resources(task, settings, config).remote(
                config, checkpoint, scorer)] = trial_id
        done, _ = ray.wait(list(pending), num_returns=1)
        trial_id = pending.pop(done[0])
        try:
            metrics, predictions = ray.get(done[0])
        except Exception as err:  # the sweep's results stand; this cell just lacks its test score
            print(f"warning: could not score stopped trial {trial_id} on test "
                  f"({type(err).__name__}: {err}); its cell keeps no test score")
            continue
        logger.log_test_score(trial_id, metrics, predictions)
        scores[trial_id] = metrics
    return scores


def _on_trial_resources(task: Any, settings: Any, config: dict[str, Any]) -> Any:
    """The task with the resources its trial held (its GPU share and node type under
    --gpus-per-trial auto: TunerSettings.request)."""
    request = settings.request(config)
    cpus, gpus = request.pop("CPU"), request.pop("GPU", 0.0)
    return task.options(num_cpus=cpus, num_gpus=gpus, resources=request, max_retries=1)


def with_scores(trials: list[Any], scores: dict[str, dict[str, Any]]) -> list[Any]:
    """TrialResults (read from Ray: run_id = the Tune trial id) with the stopped trials' test
    scores."""
    from dataclasses import replace
    return [replace(t, test_acc=scores[t.run_id]["test_acc"]) if t.run_id in scores else t
            for t in trials]
