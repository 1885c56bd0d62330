"""Table 1 as users and scripts read it: the exact markdown, CSV and console text of one sweep.

The expected texts are written out by hand from the trials below (not produced by the code under
test), so a changed number, mark, order, column or separator fails here. Fixture: one benchmark
x LLM group with a baseline, a grid trial that beats its retune, a stopped trial without a test
score, a diverged grid trial replaced by its retune, a second LLM, a DoRA row with two ranks
(bold = best of the row), and a trial that never reported (left out).
"""
from __future__ import annotations

import csv

from orchestrator.driver.targets import resolve_targets
from orchestrator.results.model import DIVERGED, ERROR, FINISHED, LEGEND, STOPPED, TrialResult
from orchestrator.results.summary import best_per_group, format_summary
from orchestrator.results.table1 import CELL_COLUMNS, build_table1, markdown, text, write_table1
from trainables.cell import Cell
from trainables.methods import PeftSetup
from trainables.pretrained import read_manifest

SQA, ICON, T5, LLAMA = "synth-scienceqa", "synth-iconqa", "tiny-t5", "tiny-llama"


def result(bench, llm, method, sub, rank, val, test, run_id, status=FINISHED, epochs=3,
           retune=False, adapter="lora"):
    cell = Cell(bench, llm, PeftSetup(method, sub, rank, adapter))
    return TrialResult(cell, status, val, test, epochs, retune_of=cell.id if retune else None,
                       run_id=run_id)


TRIALS = [
    result(SQA, T5, "baseline", "none", 0, 0.50, 0.49, "b"),
    result(SQA, T5, "qformer_lora", "ffn", 1, 0.60, 0.58, "g1"),
    result(SQA, T5, "qformer_lora", "ffn", 2, 0.40, None, "s", STOPPED, epochs=1),
    result(ICON, T5, "qformer_lora", "ffn", 1, 0.20, None, "d", DIVERGED, epochs=2),
    result(ICON, LLAMA, "qformer_lora", "ffn", 1, 0.70, 0.665, "L"),
    result(SQA, T5, "qformer_lora", "ffn", 1, 0.50, 0.41, "d1", adapter="dora"),
    result(SQA, T5, "qformer_lora", "ffn", 2, 0.45, 0.44, "d2", adapter="dora"),
    result(SQA, LLAMA, "llm_lora", "ffn", 4, None, None, "never", STOPPED, epochs=0),
    # retunes: the first loses to its grid trial (higher test, lower val), the second replaces
    # the diverged grid trial
    result(SQA, T5, "qformer_lora", "ffn", 1, 0.55, 0.70, "r1", retune=True),
    result(ICON, T5, "qformer_lora", "ffn", 1, 0.30, 0.29, "r4", retune=True),
]

MARKDOWN_ROWS = """\
| method | LLM | synth-scienceqa no LoRA | synth-scienceqa r1 | synth-scienceqa r2 | synth-iconqa r1 |
|---|---|---|---|---|---|
| baseline/none | tiny-t5 | 49.00 |  |  |  |
| qformer_lora/ffn | tiny-t5 |  | 58.00 | –†1 | 29.00\\* |
| qformer_lora/ffn | tiny-llama |  |  |  | 66.50 |
| qformer_lora/ffn dora | tiny-t5 |  | 41.00 | **44.00** |  |
"""


def test_markdown_is_exactly_the_chosen_trials_test_accuracy_with_marks():
    md = markdown(build_table1(TRIALS))
    assert md.startswith(MARKDOWN_ROWS + "\nMarks: \\* retuned with a smaller learning rate; †k ")
    assert md.endswith(". Bold: best of the row per benchmark. Test accuracy in %, mean±sd over "
                       "seeds where a cell has several.\n")
    assert "[a, b]" not in md
    assert md.count("\\*") == 2  # the retuned cell and the legend's first star only


def test_markdown_with_intervals_says_what_the_brackets_are():
    assert markdown(build_table1(TRIALS), intervals=True).endswith(
        "several. [a, b]: 95% interval (Wilson; bootstrap over problems with seeds).\n")


def test_console_text_of_both_tables():
    names = resolve_targets([], [], []).display_name  # paper names for the stand-ins
    table = build_table1(TRIALS)
    head = ("LLM         method                   scienceqa no LoRA       scienceqa r1"
            "       scienceqa r2          iconqa r1")
    assert text(table, "table1", names).splitlines() == [
        head,
        "flan-t5-xl  baseline/none                         49.0" + " " * 57,
        "flan-t5-xl  qformer_lora/ffn       " + " " * 19 + "               58.0"
        "                –†1              29.0*",
        "vicuna-7b   qformer_lora/ffn       " + " " * 57 + "               66.5",
        "flan-t5-xl  qformer_lora/ffn dora  " + " " * 19 + "               41.0"
        "               44.0" + " " * 19,
    ]
    val = text(table, "val", names).splitlines()
    assert val[0] == head
    assert val[2].split() == ["flan-t5-xl", "qformer_lora/ffn", "60.0", "40.0†1", "30.0*"]
    assert val[3].split() == ["vicuna-7b", "qformer_lora/ffn", "70.0"]
    # without paper names, the actual names (column labels cut at 17 characters)
    raw = text(table, "table1").splitlines()
    assert raw[0].split()[2:5] == ["synth-scienceqa", "n", "synth-scienceqa"]
    assert raw[1].startswith("tiny-t5     baseline/none")


WIDE_HEADER = ["method", "llm"] + [f"{c}{part}" for c in (
    "synth-scienceqa no LoRA", "synth-scienceqa r1", "synth-scienceqa r2", "synth-iconqa r1")
    for part in ("", " sd", " marks", " status", " epochs")]
EMPTY = ["", "", "", "", ""]


def test_table1_csv_and_cells_csv_exactly(tmp_path):
    md, wide, cells = write_table1(build_table1(TRIALS), tmp_path)
    assert (md.name, wide.name, cells.name) == ("table1.md", "table1.csv", "table1_cells.csv")
    assert md.read_text().startswith(MARKDOWN_ROWS)
    lines = [line.split(",") for line in wide.read_text().splitlines()]
    assert lines == [
        WIDE_HEADER,
        ["baseline/none", T5, "49.00", "", "", "finished", "3", *EMPTY, *EMPTY, *EMPTY],
        ["qformer_lora/ffn", T5, *EMPTY, "58.00", "", "", "finished", "3",
         "", "", "†1", "stopped", "1", "29.00", "", "*", "finished", "3"],
        ["qformer_lora/ffn", LLAMA, *EMPTY, *EMPTY, *EMPTY, "66.50", "", "", "finished", "3"],
        ["qformer_lora/ffn dora", T5, *EMPTY, "41.00", "", "", "finished", "3",
         "44.00", "", "", "finished", "3", *EMPTY],
    ]
    rows = [line.split(",") for line in cells.read_text().splitlines()]
    assert rows[0] == CELL_COLUMNS
    no_stats = [""] * 7  # ci_low .. indistinguishable_from_best: no predictions given
    assert rows[1:] == [
        ["baseline/none", T5, SQA, "0", "49.00", "", "1", *no_stats, "50.00", "finished", "3", "",
         "0", "1", "b", "lora", "fixed8", f"{SQA}|{T5}|baseline/none|r0"],
        ["qformer_lora/ffn", LLAMA, ICON, "1", "66.50", "", "1", *no_stats, "70.00", "finished",
         "3", "", "0", "1", "L", "lora", "fixed8", f"{ICON}|{LLAMA}|qformer_lora/ffn|r1"],
        ["qformer_lora/ffn", T5, ICON, "1", "29.00", "", "1", *no_stats, "30.00", "finished",
         "3", "*", "1", "2", "r4", "lora", "fixed8", f"{ICON}|{T5}|qformer_lora/ffn|r1"],
        ["qformer_lora/ffn", T5, SQA, "1", "58.00", "", "1", *no_stats, "60.00", "finished",
         "3", "", "0", "2", "g1", "lora", "fixed8", f"{SQA}|{T5}|qformer_lora/ffn|r1"],
        ["qformer_lora/ffn", T5, SQA, "2", "", "", "1", *no_stats, "40.00", "stopped",
         "1", "†1", "0", "1", "s", "lora", "fixed8", f"{SQA}|{T5}|qformer_lora/ffn|r2"],
        ["qformer_lora/ffn dora", T5, SQA, "1", "41.00", "", "1", *no_stats, "50.00", "finished",
         "3", "", "0", "1", "d1", "dora", "fixed8", f"{SQA}|{T5}|qformer_lora/ffn|r1|dora"],
        ["qformer_lora/ffn dora", T5, SQA, "2", "44.00", "", "1", *no_stats, "45.00", "finished",
         "3", "", "0", "1", "d2", "dora", "fixed8", f"{SQA}|{T5}|qformer_lora/ffn|r2|dora"],
    ]


class Described:
    """A retune as the summary sees it (orchestrator.driver.retune.Retune.describe)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def describe(self) -> str:
        return self.text


def zero_shot_line(paper_bench: str, bench: str, paper_llm: str, llm: str, best: str) -> str:
    zero = read_manifest(llm)["zero_shot"][bench]
    return (f"  {paper_bench} ({bench}) / {paper_llm} ({llm}): zero-shot {100 * zero['test']:.1f} "
            f"(chance {100 * zero['chance_test']:.1f}), best fine-tuned {best}")


def test_the_console_summary_line_by_line():
    trials = [*TRIALS, result(ICON, T5, "baseline", "none", 0, 0.90, None, "e", ERROR),
              result(ICON, LLAMA, "baseline", "none", 0, 0.10, None, "dv", DIVERGED),
              result(SQA, LLAMA, "llm_lora", "ffn", 8, 0.30, None, "s8", STOPPED, epochs=2)]
    targets = resolve_targets([], [], [])
    tracking = '{"tracking_uri": "sqlite:///m.db", "experiment": "sweep-x"}'
    lines = format_summary(trials, [Described("one"), Described("two")], targets, tracking,
                           12.4).splitlines()
    table = build_table1(trials)
    val, test = text(table, "val", targets.display_name), text(table, "table1", targets.display_name)
    assert lines == [
        "", "=" * 30 + " sweep summary " + "=" * 30,
        "11 cells: 6 ran to the end, 3 stopped early by ASHA (†), 1 diverged, 1 failed; "
        "2 retuned (*); 6 of 11 with a test accuracy; wall time 12 s", "",
        "best cell per group (by best validation accuracy):",
        # the failed baseline (val 90.0) is no group's best; a stopped best has no test score
        "  iconqa (synth-iconqa) / vicuna-7b (tiny-llama): qformer_lora/ffn r1  val 70.0  test 66.5",
        "  iconqa (synth-iconqa) / flan-t5-xl (tiny-t5): qformer_lora/ffn r1  val 30.0  test 29.0",
        "  scienceqa (synth-scienceqa) / vicuna-7b (tiny-llama): llm_lora/ffn r8  val 30.0  test -",
        "  scienceqa (synth-scienceqa) / flan-t5-xl (tiny-t5): qformer_lora/ffn r1  val 60.0  test 58.0",
        "", f"marks: {LEGEND}", "", "best validation accuracy (%):", *val.splitlines(),
        "", "Table 1: test accuracy (%) at the best validation epoch:", *test.splitlines(),
        "", "zero-shot test accuracy (%) of the pretrained stand-ins, no fine-tuning "
        "(trainables/assets/pretrained/*.json):",
        # the tiny stand-ins load their shipped weights by default: each group's zero-shot
        # score (from the manifest) beside its best chosen test accuracy ("-": none scored)
        zero_shot_line("iconqa", ICON, "vicuna-7b", LLAMA, "66.5"),
        zero_shot_line("iconqa", ICON, "flan-t5-xl", T5, "29.0"),
        zero_shot_line("scienceqa", SQA, "vicuna-7b", LLAMA, "-"),
        zero_shot_line("scienceqa", SQA, "flan-t5-xl", T5, "58.0"),
        "", "retuned cells (*):", "  one", "  two",
        "", f"MLflow: {tracking}",
        "  browse: mlflow ui --backend-store-uri sqlite:///m.db --host 127.0.0.1 --port 5000  "
        "(experiment 'sweep-x', one child run per trial)",
    ]
    # a tracking line that is not JSON (or names no store) gets no browse hint
    assert format_summary(TRIALS, [], targets, "disabled", 1.0).splitlines()[-1] == "MLflow: disabled"
    assert format_summary(TRIALS, [], targets, '{"x": 1}', 1.0).splitlines()[-1] == 'MLflow: {"x": 1}'


def test_best_per_group_keeps_the_first_of_equal_cells_and_skips_unscored():
    first = result(SQA, T5, "qformer_lora", "ffn", 1, 0.5, 0.4, "a")
    tie = result(SQA, T5, "qformer_lora", "ffn", 2, 0.5, 0.6, "b")
    unscored = result(SQA, T5, "qformer_lora", "ffn", 4, None, None, "c", STOPPED)
    best = best_per_group([unscored, first, tie])
    assert list(best) == [(SQA, T5)] and best[(SQA, T5)].chosen is first


PIDS = [f"p{i:02d}" for i in range(20)]


def test_the_summary_lists_per_group_the_best_and_every_indistinguishable_cell():
    """Per-problem correctness: the first n of 20 problems right. Exact McNemar against the
    best: 1 discordant problem p=1, 2 -> p=0.5, 12 or 18 all one way -> p < 0.001."""
    right = {"a2": 16, "a1": 15, "a4": 14, "a0": 4, "b2": 20, "b0": 2}
    trials = [result(SQA, T5, "llm_lora", "all", 2, 0.9, 0.80, "a2"),
              result(SQA, T5, "llm_lora", "all", 1, 0.8, 0.75, "a1"),
              result(SQA, T5, "baseline", "none", 0, 0.3, 0.20, "a0"),
              result(SQA, T5, "llm_lora", "all", 4, 0.7, 0.70, "a4"),
              result(ICON, LLAMA, "baseline", "none", 0, 0.2, 0.10, "b0"),
              result(ICON, LLAMA, "llm_lora", "all", 2, 0.9, 1.00, "b2")]

    def correctness(t):
        return {p: i < right[t.run_id] for i, p in enumerate(PIDS)}

    lines = format_summary(trials, [], resolve_targets([], [], []), "{}", 1.0,
                           correctness).splitlines()
    at = lines.index("best test accuracy per group and the cells indistinguishable from it "
                     "(paired test, p >= 0.05):")
    assert lines[1] == "=" * 30 + " sweep summary " + "=" * 30 and lines[at - 1] == ""
    assert lines[at + 1: at + 3] == [
        "  iconqa / vicuna-7b: ◆ llm_lora/all r2 100.0; ≈ none",
        "  scienceqa / flan-t5-xl: ◆ llm_lora/all r2 80.0; ≈ llm_lora/all r1 75.0 (p=1), "
        "llm_lora/all r4 70.0 (p=0.5)",
    ]
    assert lines[at + 3] == "" and lines[-1] == "MLflow: {}"


def test_seeds_and_paired_tests_in_both_csv_files(tmp_path):
    """llm_lora r2 has two seeds (0.80 stopped after 2 epochs, chosen by its higher val; 0.75),
    r1 one (14 of 20 right), the baseline 4 of 20: ◆ r2, ≈ r1 (paired bootstrap p >= 0.05),
    the baseline far below. Wilson 95% of 14/20 by hand: [48.10, 85.45]."""
    right = {"s0": 15, "s1": 16, "r1": 14, "b": 4}
    trials = [result(SQA, T5, "llm_lora", "all", 2, 0.76, 0.75, "s0", epochs=4),
              result(SQA, T5, "llm_lora", "all", 2, 0.81, 0.80, "s1", STOPPED, epochs=2),
              result(SQA, T5, "llm_lora", "all", 1, 0.71, 0.70, "r1", epochs=4),
              result(SQA, T5, "baseline", "none", 0, 0.21, 0.20, "b", epochs=4)]

    def correctness(t):
        return {p: i < right[t.run_id] for i, p in enumerate(PIDS)}

    _, wide, cells = write_table1(build_table1(trials, correctness), tmp_path)
    lines = [line.split(",") for line in wide.read_text().splitlines()]
    assert lines[1:] == [
        ["baseline/none", T5, "20.00", "", "", "finished", "4", *EMPTY, *EMPTY],
        ["llm_lora/all", T5, *EMPTY, "70.00", "", "≈", "finished", "4",
         "77.50", "3.54", "†2◆", "stopped/finished", "2/4"],
    ]
    rows = {r["cell_id"]: r for r in csv.DictReader(cells.open())}
    r1, r2 = rows[f"{SQA}|{T5}|llm_lora/all|r1"], rows[f"{SQA}|{T5}|llm_lora/all|r2"]
    base = rows[f"{SQA}|{T5}|baseline/none|r0"]
    assert (r1["ci_low"], r1["ci_high"], r1["ci_method"]) == ("48.10", "85.45", "wilson")
    assert (r1["paired_test"], r1["indistinguishable_from_best"], r1["best_in_group"]) == \
        ("paired-bootstrap", "1", "0")
    assert float(r1["p_vs_best"]) >= 0.05 > float(base["p_vs_best"])
    assert (base["indistinguishable_from_best"], base["marks"]) == ("0", "")
    assert (r2["test_acc"], r2["test_acc_sd"], r2["seeds"], r2["best_in_group"]) == ("77.50", "3.54", "2", "1")
    assert (r2["ci_method"], r2["p_vs_best"], r2["paired_test"], r2["marks"]) == ("bootstrap", "", "", "†2◆")
    assert float(r2["ci_low"]) < 77.5 < float(r2["ci_high"])
    assert (r2["run_id"], r2["status"], r2["epochs"], r2["best_val_acc"]) == ("s1", "stopped/finished", "2/4", "78.50")


def test_console_width_has_a_floor_for_short_method_labels():
    table = build_table1([result(SQA, T5, "baseline", "none", 0, 0.5, 0.49, "b")])
    assert text(table, "table1").splitlines() == [
        "LLM         " + "method" + " " * 12 + "  synth-scienceqa n",  # 12 + 18 + 19 wide
        "tiny-t5     " + "baseline/none" + " " * 5 + " " * 15 + "49.0"]
    # an LLM display name longer than its column is cut to 11 characters: one space before the method
    long_names = {T5: "a-twenty-character-x"}.get
    assert text(table, "table1", lambda n: long_names(n, n)).splitlines()[1].startswith(
        "a-twenty-ch baseline/none ")


def test_the_best_of_a_row_is_taken_over_the_metric_asked_for():
    table = build_table1([result(SQA, T5, "qformer_lora", "ffn", 1, 0.50, 0.41, "d1", adapter="dora"),
                          result(SQA, T5, "qformer_lora", "ffn", 2, 0.45, 0.44, "d2", adapter="dora")])
    (row,) = table.rows
    assert table.best_in_row(row, SQA) == 44.0  # test accuracy: r2
    assert table.best_in_row(row, SQA, "val") == 50.0  # best validation: r1


def test_write_table1_adds_intervals_to_the_markdown_only_when_asked(tmp_path):
    trials = [result(SQA, T5, "llm_lora", "all", 1, 0.71, 0.70, "r1"),
              result(SQA, T5, "baseline", "none", 0, None, 0.20, "b")]  # no val reported
    right = {"r1": 14, "b": 4}
    table = build_table1(trials, lambda t: {p: i < right[t.run_id] for i, p in enumerate(PIDS)})
    plain, _, cells = write_table1(table, tmp_path)
    assert "[" not in plain.read_text()
    rows = {r["run_id"]: r for r in csv.DictReader(cells.open())}
    assert (rows["b"]["best_val_acc"], rows["b"]["test_acc"]) == ("", "20.00")
    (tmp_path / "i").mkdir()
    md = write_table1(table, tmp_path / "i", intervals=True)[0].read_text()
    assert "70.00◆ [48.1, 85.5]" in md and "[a, b]: 95% interval" in md


def test_a_chosen_retune_without_a_test_score_shows_its_escaped_marks_in_markdown():
    trials = [result(ICON, T5, "qformer_lora", "ffn", 1, 0.2, None, "d", DIVERGED, epochs=2),
              result(ICON, T5, "qformer_lora", "ffn", 1, 0.3, None, "r", STOPPED, epochs=1,
                     retune=True)]
    assert "| qformer_lora/ffn | tiny-t5 | –\\*†1 |" in markdown(build_table1(trials))


def test_a_cell_without_a_test_score_does_not_stop_the_paired_tests_of_the_next():
    right = {"r2": 16, "r1": 14}
    trials = [result(SQA, T5, "llm_lora", "all", 4, 0.5, None, "s", STOPPED, epochs=1),
              result(SQA, T5, "llm_lora", "all", 2, 0.9, 0.80, "r2"),
              result(SQA, T5, "llm_lora", "all", 1, 0.8, 0.70, "r1")]
    table = build_table1(trials, lambda t: {p: i < right[t.run_id] for i, p in enumerate(PIDS)})
    row = table.rows[0]
    assert [table.entry_text(row, (SQA, r)) for r in (1, 2, 4)] == ["70.00≈", "80.00◆", "–†1"]


def test_the_validation_table_shows_the_validation_spread_over_seeds():
    trials = [result(SQA, T5, "llm_lora", "all", 2, 0.70, 0.75, "s0"),
              result(SQA, T5, "llm_lora", "all", 2, 0.80, 0.76, "s1")]
    table = build_table1(trials)
    row = table.rows[0]
    assert table.entry_text(row, (SQA, 2), "val") == "75.00±7.07"  # val 0.70 / 0.80
    assert table.entry_text(row, (SQA, 2)) == "75.50±0.71"  # test 0.75 / 0.76
    assert table.sd(row, (SQA, 4)) is None and table.value(row, (SQA, 4)) is None  # no such cell
