"""Cell ids: the paper cells keep their pre-adapter ids; every id parses back to its cell."""
from __future__ import annotations

import pytest

from trainables.cell import Cell, format_cell_id, parse_cell_id
from trainables.config import TrialConfig
from trainables.methods import PeftSetup

# Ids as sweeps before adapter variants wrote them (MLflow cell_id tags, Tune trial names).
ROUND_ONE_IDS = [
    "synth-scienceqa|tiny-t5|qformer_lora/all|r1",
    "synth-scienceqa|tiny-llama|llm_lora/attn|r2",
    "synth-iconqa|tiny-t5|both_lora/all|r2",
    "synth-iconqa|tiny-llama|baseline/none|r0",
    "scienceqa|flan-t5-xl|qformer_lora/cross_attn|r8",
]


@pytest.mark.parametrize("text", ROUND_ONE_IDS)
def test_paper_cells_keep_their_ids(text):
    cell = parse_cell_id(text)
    assert cell.peft.is_paper_lora and cell.id == text
    b, llm, ms, r = text.split("|")
    m, s = ms.split("/")
    # A round-1 trial config (no adapter / alpha keys) still names the same cell.
    cfg = TrialConfig.from_dict({"benchmark": b, "llm": llm, "method": m, "sublayer": s,
                                 "rank": int(r[1:]), "data_root": "/d" if "-" not in b else None})
    assert cfg.cell_id == text


@pytest.mark.parametrize(("peft", "suffix"), [
    (PeftSetup("both_lora", "all", 4, "dora"), "|dora"),
    (PeftSetup("both_lora", "all", 4, alpha="2r"), "|alpha=2r"),
    (PeftSetup("llm_lora", "ffn", 1, "rslora", "2r"), "|rslora,alpha=2r"),
    (PeftSetup("qformer_lora", "self_attn", 8, "pissa"), "|pissa"),
])
def test_variant_cells_name_their_variant_and_round_trip(peft, suffix):
    cell = Cell("iconqa", "vicuna-7b", peft)
    assert cell.id.endswith(suffix) and cell.id.count("|") == 4
    assert parse_cell_id(cell.id) == cell
    assert format_cell_id(cell) == cell.id
    assert cell.group == ("iconqa", "vicuna-7b") and cell.group_id == "iconqa|vicuna-7b"


@pytest.mark.parametrize(("text", "message"), [
    ("scienceqa|flan-t5-xl|both_lora/all", "malformed cell id"),
    ("scienceqa|flan-t5-xl|both_lora|r2", "malformed cell id"),
    ("scienceqa|flan-t5-xl|both_lora/all|2", "malformed cell id"),
    ("scienceqa|flan-t5-xl|both_lora/all|r2|dora|x", "malformed cell id"),
    ("scienceqa|flan-t5-xl|both_lora/all|r2|beta=1", "malformed cell id"),
    ("scienceqa|flan-t5-xl|both_lora/all|r2|vera", "unknown adapter 'vera'"),
    ("scienceqa|gpt-4|both_lora/all|r2", "unknown llm 'gpt-4'"),
    ("scienceqa|flan-t5-xl|both_lora/all|r2|lora", "not canonical"),
    ("scienceqa|flan-t5-xl|both_lora/all|r2|alpha=fixed8", "not canonical"),
])
def test_malformed_ids_fail_naming_the_id(text, message):
    with pytest.raises(ValueError, match=message):
        parse_cell_id(text)


def test_display_name_uses_the_paper_names():
    cell = parse_cell_id("synth-iconqa|tiny-t5|both_lora/all|r2|dora")
    names = {"synth-iconqa": "iconqa", "tiny-t5": "flan-t5-xl"}.get
    assert cell.display_name(lambda n: names(n) or n) == "iconqa / flan-t5-xl: both_lora/all dora r2"
