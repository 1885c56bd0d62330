"""The paper's prompts (Appendix B), built once at prepare time and stored in the Parquet.

ScienceQA: `<Image> Context: {hint} {lecture} Question: {question} Options: {choices}. Answer:`
IconQA:    `<Image> Question: {question} Options: {choices}. Short answer:`

What is stored as `prompt` is the text after `<Image> `: batching prepends exactly
num_query_tokens image tokens. `qformer_text` is the same text (LAVIS feeds the instruction to
the Q-Former). Whitespace rules, chosen so the template reads the same with parts missing:
- an empty (or whitespace-only) hint or lecture is absent; the context is the present parts
  joined by one space, each part stripped of surrounding whitespace (inner text, newlines
  included, is kept as is); with no context at all the prompt reads `Context: Question: ...`
  (the template's label stays, no double space);
- options read `(a) first (b) second ...` (letters a-z, one space between options);
- the candidates are the labelled options `(a) first`; the target is the labelled answer;
- the context is cut after CONTEXT_MAX_WORDS words (defaults.py), the text up to the end of
  that word kept verbatim; question and options are never cut.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass

from trainables.data.records import Record
from trainables.defaults import CONTEXT_MAX_WORDS

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class PromptParts:
    """Everything the model is given for one problem, as stored in the prepared Parquet."""

    context: str
    prompt: str
    qformer_text: str
    candidates: tuple[str, ...]
    target: str


def label(i: int) -> str:
    if not 0 <= i < len(string.ascii_lowercase):
        raise ValueError(f"option index {i} has no letter label (at most 26 options)")
    return f"({string.ascii_lowercase[i]})"


def candidates(choices: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`(a) first`, `(b) second`, ... in the original option order."""
    return tuple(f"{label(i)} {c}" for i, c in enumerate(choices))


def truncate_words(text: str, max_words: int) -> str:
    """The text up to the end of its `max_words`-th word (verbatim), or all of it."""
    words = list(_WORD.finditer(text))
    if len(words) <= max_words:
        return text
    return text[: words[max_words - 1].end()] if max_words > 0 else ""


def context_text(hint: str, lecture: str, max_words: int = CONTEXT_MAX_WORDS) -> str:
    present = [p.strip() for p in (hint, lecture) if p.strip()]
    return truncate_words(" ".join(present), max_words)


def build_prompt(rec: Record, max_words: int = CONTEXT_MAX_WORDS) -> PromptParts:
    """Prompt, Q-Former text, candidates and target of one record."""
    cands = candidates(rec.choices)
    options = " ".join(cands)
    if rec.kind == "scienceqa":
        context = context_text(rec.hint, rec.lecture, max_words)
        head = f"Context: {context} " if context else "Context: "
        prompt = f"{head}Question: {rec.question} Options: {options}. Answer:"
    elif rec.kind == "iconqa":
        context = ""
        prompt = f"Question: {rec.question} Options: {options}. Short answer:"
    else:
        raise ValueError(f"unknown record kind {rec.kind!r}; allowed: scienceqa, iconqa")
    return PromptParts(context=context, prompt=prompt, qformer_text=prompt,
                       candidates=cands, target=cands[rec.answer_index])
