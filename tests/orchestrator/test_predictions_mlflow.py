"""Reading a run's test predictions back from MLflow (orchestrator.results.predictions)."""
from __future__ import annotations

import os

from mlflow.tracking import MlflowClient

from orchestrator.results import predictions
from trainables.predictions import SplitScores, predictions_table, write_predictions


def test_the_test_rows_come_back_without_a_progress_bar(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv(predictions.PROGRESS_BAR, raising=False)
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "art"))
    run_id = client.create_run(exp).info.run_id
    val = SplitScores("val", ("v1",), (0,), (0,), ((1.0, 2.0),))
    test = SplitScores("test", ("t1", "t2"), (1, 1), (0, 1), ((1.0, 2.0), (3.0, 0.5)))
    path = write_predictions(predictions_table([val, test]), tmp_path / "p")
    client.log_artifact(run_id, str(path), predictions.ARTIFACT.rsplit("/", 1)[0])
    capfd.readouterr()
    assert predictions.test_correctness(client, run_id) == {"t1": False, "t2": True}
    assert "Downloading artifacts" not in "".join(capfd.readouterr())
    assert predictions.PROGRESS_BAR not in os.environ  # put back as it was
    assert predictions.test_correctness(client, client.create_run(exp).info.run_id) is None  # no artifact
