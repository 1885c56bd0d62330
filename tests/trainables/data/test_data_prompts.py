"""The stored prompts equal the paper's templates (Appendix B) exactly, on real problems."""
from __future__ import annotations

import json

import pytest
from conftest import ASSETS

from trainables.data.iconqa import load_iconqa
from trainables.data.prompts import build_prompt, candidates, context_text, truncate_words
from trainables.data.records import Record
from trainables.data.scienceqa import load_scienceqa
from trainables.defaults import CONTEXT_MAX_WORDS


def _expected_scienceqa(raw: dict) -> str:
    """The template written out by hand: `Context: {hint} {lecture} Question: ... Answer:`, with
    the documented rules: parts stripped, absent parts leave no double space."""
    opts = " ".join(f"({'abcde'[i]}) {c}" for i, c in enumerate(raw["choices"]))
    parts = [(raw.get(k) or "").strip() for k in ("hint", "lecture")]  # missing/null = absent
    ctx = " ".join(p for p in parts if p)
    head = f"Context: {ctx} " if ctx else "Context: "
    return f"{head}Question: {raw['question']} Options: {opts}. Answer:"


@pytest.fixture(scope="module")
def sqa() -> tuple[dict, dict[str, Record]]:
    raw = json.loads((ASSETS / "scienceqa" / "problems.json").read_text())
    return raw, {r.pid: r for r in load_scienceqa(ASSETS / "scienceqa")}


@pytest.mark.parametrize("pid, what", [("42", "lecture + hint, 5 options"), ("158", "lecture, no hint"),
                                       ("6028", "no hint, no lecture"), ("6212", "5 options, hint only")])
def test_scienceqa_prompt_is_the_template(sqa, pid: str, what: str) -> None:
    raw, recs = sqa
    parts = build_prompt(recs[pid], max_words=10_000)  # untruncated: the template verbatim
    assert parts.prompt == _expected_scienceqa(raw[pid]), what
    assert parts.qformer_text == parts.prompt
    assert parts.candidates == tuple(f"({'abcde'[i]}) {c}" for i, c in enumerate(raw[pid]["choices"]))
    assert parts.target == parts.candidates[raw[pid]["answer"]]


def test_literal_prompts_of_real_pids(sqa) -> None:
    _, recs = sqa
    assert build_prompt(recs["6028"]).prompt == (
        "Context: Question: Which material is this door made of? Options: (a) wood (b) cardboard. Answer:")
    assert build_prompt(recs["6212"]).prompt.endswith(
        "Options: (a) 3/4 (b) 4/4 (c) 0/4 (d) 2/4 (e) 1/4. Answer:")


def test_iconqa_prompt_is_the_template() -> None:
    recs = {r.pid: r for r in load_iconqa(ASSETS / "iconqa")}
    raw = json.loads((ASSETS / "iconqa" / "iconqa_data" / "problems.json").read_text())
    for pid, rec in recs.items():
        opts = " ".join(f"({'abcde'[i]}) {c}" for i, c in enumerate(raw[pid]["choices"]))
        assert build_prompt(rec).prompt == f"Question: {raw[pid]['question']} Options: {opts}. Short answer:"


def test_absent_parts_leave_no_double_space() -> None:
    assert context_text("", "") == ""
    assert context_text("  ", "Lecture text.") == "Lecture text."
    assert context_text("Hint.\n", " Lecture.") == "Hint. Lecture."
    assert candidates(["x", "y"]) == ("(a) x", "(b) y")


def test_long_context_is_cut_to_the_word_limit_verbatim() -> None:
    text = "w1  w2\nw3 " + " ".join(f"x{i}" for i in range(500))
    cut = truncate_words(text, 5)
    assert cut == "w1  w2\nw3 x0 x1"
    assert len(context_text(text, "", CONTEXT_MAX_WORDS).split()) == CONTEXT_MAX_WORDS
    assert truncate_words("short text", 5) == "short text"


def test_truncation_never_cuts_question_or_options(sqa) -> None:
    _, recs = sqa
    rec = recs["42"]  # a long lecture
    parts = build_prompt(rec, max_words=3)
    assert parts.context == "This passage describes"
    assert parts.prompt.endswith(f"Question: {rec.question} Options: {' '.join(parts.candidates)}. Answer:")


def test_shared_sample_prompts_match(shared) -> None:
    raw = json.loads((shared / "scienceqa" / "problems.json").read_text())
    recs = load_scienceqa(shared / "scienceqa")
    for rec in recs:
        assert build_prompt(rec, max_words=10_000).prompt == _expected_scienceqa(raw[rec.pid]), rec.pid
