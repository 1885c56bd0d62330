"""Reading the trials' per-problem predictions and category metrics back from MLflow.

Every trial run holds ``predictions/predictions.parquet`` (trainables.predictions; stopped
trials get theirs from orchestrator.driver.stopped_scores). Table 1's intervals and paired tests
need the test rows of the runs a table shows; the category breakdown needs the runs'
``test_acc/<category>`` metrics. Both are read lazily, once per run.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pyarrow.compute as pc
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.environ import env_var
from orchestrator.results.model import TrialResult
from orchestrator.tracking.mlflow_runs import CATEGORY_PREFIX, PREDICTIONS_ARTIFACT
from trainables.predictions import FILE_NAME, read_predictions

ARTIFACT = f"{PREDICTIONS_ARTIFACT}/{FILE_NAME}"
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
"""MLflow draws a tqdm bar per artifact download: a 132-trial report printed 264 of them (twice
per run) between the summary and the report path. Off while we download, then put back (MLflow
reads the variable at each download)."""


def test_correctness(client: MlflowClient, run_id: str) -> dict[str, bool] | None:
    """pid -> correct on the test split of a run's predictions; None without the artifact."""
    with tempfile.TemporaryDirectory() as tmp, env_var(PROGRESS_BAR, "false"):
        try:
            path = client.download_artifacts(run_id, ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        table = read_predictions(Path(path))
    test = table.filter(pc.equal(table["split"], "test")).to_pydict()
    return dict(zip(test["pid"], test["correct"])) or None


def correctness_from_mlflow(client: MlflowClient, run_id_of: Callable[[TrialResult], str | None]
                            = lambda t: t.run_id) -> Callable[[TrialResult], Mapping[str, bool] | None]:
    """A Table 1 ``correctness`` function reading each trial's predictions once; ``run_id_of``
    maps a trial to its MLflow run (results read from Ray carry the Tune trial id)."""
    cache: dict[str, dict[str, bool] | None] = {}

    def correctness(trial: TrialResult) -> Mapping[str, bool] | None:
        run_id = run_id_of(trial)
        if not run_id:
            return None
        if run_id not in cache:
            cache[run_id] = test_correctness(client, run_id)
        return cache[run_id]

    return correctness


def category_metrics(client: MlflowClient, run_id: str) -> dict[str, float]:
    """A run's test accuracy per category (keys without the ``test_acc/`` prefix)."""
    metrics = client.get_run(run_id).data.metrics
    return {k[len(CATEGORY_PREFIX):]: v for k, v in metrics.items() if k.startswith(CATEGORY_PREFIX)}
