"""The end-of-sweep summary: Table-1 shape, markers, best cell per group."""
from __future__ import annotations

from orchestrator.spaces import resolve_targets
from orchestrator.summary import CellResult, best_per_group, format_summary, format_table, mark


def row(bench, llm, method, sub, rank, val, test=None, stopped=False, epochs=3, lr=None):
    cfg = {"benchmark": bench, "llm": llm, "method": method, "sublayer": sub, "rank": rank}
    return CellResult(config=cfg, best_val_acc=val, test_acc=test, epochs_run=epochs,
                      stopped_early=stopped, diverged=False, error=None, retuned_lr=lr)


ROWS = [
    row("synth-scienceqa", "tiny-t5", "baseline", "none", 0, 0.5, 0.49),
    row("synth-scienceqa", "tiny-t5", "qformer_lora", "ffn", 1, 0.6, 0.58),
    row("synth-scienceqa", "tiny-t5", "qformer_lora", "ffn", 2, 0.4, stopped=True, epochs=1),
    row("synth-iconqa", "tiny-t5", "qformer_lora", "ffn", 1, 0.3, 0.29, lr=1e-3),
    row("synth-iconqa", "tiny-t5", "qformer_lora", "ffn", 2, 0.35, 0.33),
]


def test_markers():
    assert mark(ROWS[2], ROWS[2].best_val_acc) == "40.0 s@1"
    assert mark(ROWS[2], ROWS[2].test_acc) == "- s@1"
    assert mark(ROWS[3], ROWS[3].best_val_acc) == "30.0*"


def test_table_has_rows_method_by_llm_and_columns_benchmark_by_rank():
    names = resolve_targets([], [], []).display_name
    lines = format_table(ROWS, "best_val_acc", names).splitlines()
    assert lines[0].split()[2:] == ["scienceqa", "r1", "scienceqa", "r2", "iconqa", "r1",
                                    "iconqa", "r2"]
    qformer = next(l for l in lines if "qformer_lora/ffn" in l)
    assert qformer.split()[:2] == ["flan-t5-xl", "qformer_lora/ffn"]
    assert qformer.split()[2:] == ["60.0", "40.0", "s@1", "30.0*", "35.0"]
    baseline = next(l for l in lines if "baseline" in l)
    assert baseline.split()[2:] == ["50.0"]  # once, under the first rank


def test_best_per_group_and_summary_text():
    best = best_per_group(ROWS)
    assert best[("synth-scienceqa", "tiny-t5")].config["rank"] == 1
    assert best[("synth-iconqa", "tiny-t5")].config["rank"] == 2
    text = format_summary(ROWS, [], resolve_targets([], [], []),
                          '{"tracking_uri": "sqlite:///m.db", "experiment": "sweep-x"}', 12.0)
    assert "5 cells: 4 ran to the end, 1 stopped early" in text
    assert "mlflow ui --backend-store-uri sqlite:///m.db" in text and "sweep-x" in text
