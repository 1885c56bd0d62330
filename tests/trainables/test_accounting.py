"""Parameter accounting: paper's per-rank LoRA counts, agreement with peft, the 9 x 4 table."""
from __future__ import annotations

import re
import time
from dataclasses import asdict

import pytest

from trainables.accounting import (
    ParamReport,
    all_cells,
    base_sizes,
    count_parameters,
    format_table,
    main,
    measured_trainable,
    table,
)
from trainables.families import family_spec
from trainables.methods import PeftSetup
from trainables.peft_targeting import apply_method, is_lora_param
from trainables.presets import build_model

# paper_spec.md: Q-Former LoRA parameters per rank r.
PAPER_QFORMER_PER_RANK = {"self_attn": 36_864, "cross_attn": 44_544, "ffn": 184_320, "all": 265_728}
REAL = [("flan-t5-xl", "t5"), ("vicuna-7b", "llama")]


@pytest.fixture(scope="module")
def meta_models():
    return {preset: build_model(preset, meta=True).model for preset, _ in REAL}


@pytest.mark.parametrize(("preset", "family"), REAL)
@pytest.mark.parametrize("rank", [1, 2, 4, 8])
def test_qformer_lora_counts_match_the_paper(meta_models, preset, family, rank):
    for sublayer, per_rank in PAPER_QFORMER_PER_RANK.items():
        report = count_parameters(meta_models[preset], PeftSetup("qformer_lora", sublayer, rank),
                                  family_spec(family))
        assert report.lora_params_qformer == per_rank * rank
        assert report.lora_params_llm == 0
        assert report.qformer_trainable_fraction < 0.02  # paper: under 2% of the Q-Former
        assert report.lora_params_qformer / report.qformer_total < 0.02


@pytest.mark.parametrize(("preset", "family"), REAL)
def test_analytic_counts_equal_peft_on_meta(meta_models, preset, family):
    """Wrapping a real-size meta model with peft gives the same LoRA and trainable counts."""
    model = build_model(preset, meta=True).model
    peft, spec = PeftSetup("both_lora", "all", 2), family_spec(family)
    expected = count_parameters(model, peft, spec)
    wrapped = apply_method(model, peft, spec)
    lora = sum(p.numel() for n, p in wrapped.named_parameters() if is_lora_param(n))
    assert lora == expected.lora_params_qformer + expected.lora_params_llm
    assert measured_trainable(wrapped) == expected.trainable
    assert sum(p.numel() for p in wrapped.parameters()) == expected.total
    assert count_parameters(wrapped, peft, spec) == expected  # wrapped or not


@pytest.mark.parametrize("preset", ["tiny-t5", "tiny-llama"])
def test_analytic_trainable_equals_requires_grad_for_every_cell(preset):
    for peft in all_cells():
        bundle = build_model(preset)
        family = family_spec(bundle.family)
        expected = count_parameters(bundle.model, peft, family)
        model = apply_method(bundle.model, peft, family)
        assert measured_trainable(model) == expected.trainable, peft
        assert sum(p.numel() for p in model.parameters()) == expected.total


def test_baseline_and_fractions(meta_models):
    t5, llama = family_spec("t5"), family_spec("llama")
    base = count_parameters(meta_models["flan-t5-xl"], PeftSetup("baseline", "none", 0), t5)
    assert base.trainable == base.baseline_trainable and base.fraction_of_baseline == 1.0
    assert base.lora_params_qformer == base.lora_params_llm == 0
    assert base.qformer_trainable_fraction == 1.0
    both = count_parameters(meta_models["flan-t5-xl"], PeftSetup("both_lora", "all", 8), t5)
    assert both.fraction_of_baseline < 0.10  # paper: LoRA on both trains under 10% (Flan-T5-XL)
    assert both.trainable_fraction == both.trainable / both.total
    both_vicuna = count_parameters(meta_models["vicuna-7b"], PeftSetup("both_lora", "all", 8), llama)
    assert both_vicuna.fraction_of_baseline < 0.12  # extended paper: under 12%


@pytest.mark.parametrize(("preset", "family"), REAL)
def test_table_has_every_cell(meta_models, preset, family):
    rows = table(meta_models[preset], family_spec(family))
    assert len(rows) == 1 + 8 * 4  # baseline once, 8 LoRA rows x 4 ranks
    assert {(r["method"], r["sublayer"]) for r in rows} == {(p.method, p.sublayer) for p in all_cells()}
    assert {r["adapter"] for r in rows} == {"lora"}
    dora = table(meta_models[preset], family_spec(family), (1,), "dora")
    assert {r["adapter"] for r in dora if r["method"] != "baseline"} == {"dora"}  # baseline: no adapter


def test_cli_prints_the_table_in_seconds(capsys):
    start = time.perf_counter()
    main(["--llm", "vicuna-7b"])
    elapsed = time.perf_counter() - start
    assert elapsed < 30
    lines = capsys.readouterr().out.splitlines()
    took = re.fullmatch(r"\(33 cells in (\d+\.\d\d) s\)", lines[-1])
    # The CLI prints its own time rounded to 0.01 s, so it may read up to 0.005 s above ours.
    assert took and 0 < float(took.group(1)) <= elapsed + 0.005
    rows = [line for line in lines if line.startswith(("baseline", "llm_lora", "qformer_lora", "both_lora"))]
    assert len(rows) == 33
    assert any(line.startswith("qformer_lora all") and "265,728" in line for line in rows)


def test_cli_rejects_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        main(["--llm", "gpt-4"])
    assert "invalid choice: 'gpt-4'" in capsys.readouterr().err


REPORT = ParamReport(trainable=1_234_567, total=100_000_000, trainable_fraction=0.01234567,
                     baseline_trainable=2_469_134, fraction_of_baseline=0.5,
                     lora_params_qformer=1000, lora_params_llm=24, qformer_total=4_938_268,
                     qformer_trainable_fraction=0.25)


def test_a_trials_first_report_carries_these_accounting_keys():
    assert REPORT.as_metrics() == {
        "trainable_params": 1_234_567, "total_params": 100_000_000,
        "trainable_fraction": 0.01234567, "fraction_of_baseline": 0.5, "lora_params": 1024,
        "lora_params_qformer": 1000, "lora_params_llm": 24, "qformer_trainable_fraction": 0.25}


def test_format_table_exactly():
    row = {"method": "qformer_lora", "sublayer": "ffn", "rank": 8, **asdict(REPORT)}
    head = ("method       sublayer    r     trainable  % total % baseline % Q-Former "
            " LoRA Q-Former     LoRA LLM")
    assert format_table([row]).splitlines() == [
        head, "-" * len(head),
        "qformer_lora ffn         8     1,234,567    1.235      50.00     25.000          1,000"
        "           24"]


def test_cli_first_line_and_adapter_option(capsys):
    main(["--llm", "vicuna-7b", "--adapter", "dora"])
    out = capsys.readouterr().out.splitlines()
    # the whole model (baseline row: no LoRA tensors), as h10 measured it from the hub config
    assert out[0].startswith("vicuna-7b: 7,913,726,720 parameters; baseline (full Q-Former) trains ")
    dora = next(line for line in out if line.split()[:3] == ["qformer_lora", "all", "1"])
    assert int(dora.split()[-2].replace(",", "")) > PAPER_QFORMER_PER_RANK["all"]  # + magnitudes


@pytest.mark.parametrize(("argv", "error"), [
    ([], "the following arguments are required: --llm"),
    (["--llm", "tiny-t5", "--adapter", "bogus"], "invalid choice: 'bogus'"),
])
def test_cli_rejects_missing_or_unknown_values(capsys, argv, error):
    with pytest.raises(SystemExit):
        main(argv)
    assert error in capsys.readouterr().err


def test_base_sizes_name_the_plain_models_tensors_after_wrapping():
    """The planner reads layer shapes by plain name: peft's '.base_layer.' must not show."""
    bundle = build_model("tiny-t5")
    plain = base_sizes(bundle.model)
    wrapped = apply_method(bundle.model, PeftSetup("both_lora", "all", 2), family_spec("t5"))
    assert any(".base_layer." in n for n, _ in wrapped.named_parameters())
    assert base_sizes(wrapped) == plain


def test_qformer_trainable_fraction_of_lora_and_full_qformer_methods(meta_models):
    """LoRA on the Q-Former trains its adapters and the 32 query tokens; llm_lora trains the
    whole Q-Former. The Q-Former's size is summed here from the model's own tensors."""
    model, t5 = meta_models["flan-t5-xl"], family_spec("t5")
    qformer = sum(p.numel() for n, p in model.named_parameters()
                  if n.startswith(("qformer.", "query_tokens")))
    queries = 32 * 768
    for rank in (1, 8):
        report = count_parameters(model, PeftSetup("qformer_lora", "all", rank), t5)
        assert report.qformer_total == qformer
        assert report.qformer_trainable_fraction == (265_728 * rank + queries) / qformer
    assert count_parameters(model, PeftSetup("llm_lora", "all", 4), t5).qformer_trainable_fraction == 1.0
