"""The end-of-sweep summary: Table 1 shape with the paper's names, marks, best cell per group."""
from __future__ import annotations

from orchestrator.driver.targets import resolve_targets
from orchestrator.results.model import FINISHED, STOPPED, TrialResult
from orchestrator.results.summary import best_per_group, format_summary, format_zero_shot
from orchestrator.results.table1 import build_table1, text
from trainables.cell import Cell
from trainables.methods import PeftSetup


def row(bench, llm, method, sub, rank, val, test=None, stopped=False, epochs=3, retune=False,
        adapter="lora"):
    cell = Cell(bench, llm, PeftSetup(method, sub, rank, adapter))
    return TrialResult(cell, STOPPED if stopped else FINISHED, val, test, epochs,
                       retune_of=cell.id if retune else None)


ROWS = [
    row("synth-scienceqa", "tiny-t5", "baseline", "none", 0, 0.5, 0.49),
    row("synth-scienceqa", "tiny-t5", "qformer_lora", "ffn", 1, 0.6, 0.58),
    row("synth-scienceqa", "tiny-t5", "qformer_lora", "ffn", 2, 0.4, stopped=True, epochs=1),
    row("synth-iconqa", "tiny-t5", "qformer_lora", "ffn", 1, 0.3, 0.29, retune=True),
    row("synth-iconqa", "tiny-t5", "qformer_lora", "ffn", 2, 0.35, 0.33),
    row("synth-iconqa", "tiny-t5", "qformer_lora", "ffn", 2, 0.45, 0.44, adapter="dora"),
]
NAMES = resolve_targets([], [], []).display_name


def test_table_has_rows_method_by_llm_and_columns_benchmark_by_rank():
    lines = text(build_table1(ROWS), "val", NAMES).splitlines()
    assert lines[0].split()[2:] == ["scienceqa", "no", "LoRA", "scienceqa", "r1", "scienceqa",
                                    "r2", "iconqa", "r1", "iconqa", "r2"]
    qformer = next(line for line in lines if "qformer_lora/ffn " in line and "dora" not in line)
    assert qformer.split() == ["flan-t5-xl", "qformer_lora/ffn", "60.0", "40.0†1", "30.0*",
                               "35.0"]
    dora = next(line for line in lines if "qformer_lora/ffn dora" in line)
    assert dora.split()[-1] == "45.0" and lines.index(dora) == lines.index(qformer) + 1
    baseline = next(line for line in lines if "baseline" in line)
    assert baseline.split()[2:] == ["50.0"]
    test = text(build_table1(ROWS), "table1", NAMES)
    # test only: the stopped trial without a test score shows its marks, never its val number
    assert "58.0" in test and "–†1" in test and "29.0*" in test and "40.0" not in test


def test_best_per_group_and_summary_text():
    best = best_per_group(ROWS)
    assert best[("synth-scienceqa", "tiny-t5")].cell.peft.rank == 1
    assert best[("synth-iconqa", "tiny-t5")].cell.peft.adapter == "dora"
    summary = format_summary(ROWS, [], resolve_targets([], [], []),
                             '{"tracking_uri": "sqlite:///m.db", "experiment": "sweep-x"}', 12.0)
    assert "6 cells: 5 ran to the end, 1 stopped early" in summary
    assert "5 of 6 with a test accuracy" in summary
    assert "qformer_lora/ffn dora r2  val 45.0  test 44.0" in summary
    assert "mlflow ui --backend-store-uri sqlite:///m.db" in summary and "sweep-x" in summary


def test_zero_shot_of_the_pretrained_stand_ins_sits_beside_the_grid():
    from trainables.config import TrialConfig
    from trainables.pretrained import recorded_zero_shot

    text = "\n".join(format_zero_shot(ROWS, NAMES))
    for bench, best in (("synth-scienceqa", "58.0"), ("synth-iconqa", "44.0")):
        zero = recorded_zero_shot("tiny-t5", bench)
        assert (f"({bench}) / flan-t5-xl (tiny-t5): zero-shot {100 * zero['test']:.1f} "
                f"(chance {100 * zero['chance_test']:.1f}), best fine-tuned {best}") in text
    cell = Cell("synth-iconqa", "tiny-t5", PeftSetup("baseline", "none", 0))
    random_base = TrialResult(cell, FINISHED, 0.3, 0.3, 3, config=TrialConfig.from_dict(
        {"method": "baseline", "benchmark": "synth-iconqa", "init": "random"}))
    assert format_zero_shot([random_base], NAMES) == []  # an untrained base has no zero-shot
    small = row("synth-iconqa", "small-t5", "baseline", "none", 0, 0.3, 0.3)
    assert format_zero_shot([small], NAMES) == []  # no shipped weights
    # a group without a zero-shot (small-t5 sorts before tiny-t5) does not hide the groups after it
    assert format_zero_shot([small, *ROWS], NAMES) == format_zero_shot(ROWS, NAMES)
    assert len(format_zero_shot(ROWS, NAMES)) == 4  # blank, heading, one line per tiny-t5 group


def test_a_tracking_server_is_browsed_at_its_address_a_local_store_through_mlflow_ui():
    for uri in ("http://10.0.0.5:5000", "https://mlflow.example.org"):
        summary = format_summary(ROWS, [], resolve_targets([], [], []),
                                 f'{{"tracking_uri": "{uri}", "experiment": "sweep-x"}}', 12.0)
        assert summary.splitlines()[-1] == (f"  browse: {uri}  (experiment 'sweep-x', one child run "
                                            "per trial)")
        assert "mlflow ui" not in summary
    local = format_summary(ROWS, [], resolve_targets([], [], []),
                           '{"tracking_uri": "sqlite:///m.db", "experiment": "sweep-x"}', 12.0)
    assert local.splitlines()[-1] == ("  browse: mlflow ui --backend-store-uri sqlite:///m.db --host 127.0.0.1 "
                                      "--port 5000  (experiment 'sweep-x', one child run per trial)")
