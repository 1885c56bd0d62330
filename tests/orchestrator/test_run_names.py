"""MLflow run names lead with what differs, and derived directories stay where chosen."""
from __future__ import annotations

import pytest

from orchestrator.results.report import ReportError, _default_out
from orchestrator.tracking.mlflow_runs import run_name
from orchestrator.tracking.tracker import _artifact_location
from trainables.config import TrialConfig


def test_run_names_lead_with_method_sublayer_and_rank():
    config = TrialConfig.from_dict({"method": "qformer_lora", "sublayer": "ffn", "rank": 4,
                                    "llm": "tiny-t5", "benchmark": "synth-iconqa"})
    assert run_name(config.to_dict(), config.cell) == \
        "qformer_lora/ffn r4 | synth-iconqa | tiny-t5"
    retune = {**config.to_dict(), "retune_of": "x", "lr": 0.00123}
    assert run_name(retune, config.cell).endswith("| retune lr=0.0012")
    assert run_name({**config.to_dict(), "seed": 2}, config.cell).endswith("| tiny-t5 | seed 2")
    assert run_name({"method": "nope"}, None) == "invalid trial config"


def test_a_sweep_named_dot_dot_cannot_write_into_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ReportError, match="outside"):
        _default_out("..")
    assert _default_out("sweep-x") == tmp_path / "reports" / "sweep-x"
    with pytest.raises(ValueError, match="outside"):
        _artifact_location(f"sqlite:///{tmp_path}/m.db", "..")
    assert _artifact_location(f"sqlite:///{tmp_path}/m.db", "s") == \
        str(tmp_path / "mlartifacts" / "s")


def test_the_browse_hint_binds_loopback():
    import json
    from types import SimpleNamespace

    from orchestrator.results.summary import format_summary
    info = json.dumps({"tracking_uri": "sqlite:///m.db", "experiment": "sweep-x"})
    text = format_summary([], [], SimpleNamespace(display_name=str), info, 1.0)
    assert "mlflow ui --backend-store-uri sqlite:///m.db --host 127.0.0.1" in text
