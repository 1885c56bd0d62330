"""The problem categories ScienceQA's leaderboard reports accuracy on.

Definitions follow the official evaluation (lupantech/ScienceQA tools/evaluate_acc.py):
  subject  NAT / SOC / LAN   the problem's ``subject`` field: natural / social / language science;
  context  TXT               a non-empty hint (text context),
           IMG               an image (every ScienceQA-IMG problem has one),
           NO                neither hint nor image (so never in ScienceQA-IMG);
           TXT and IMG overlap, as in the official table;
  grade    G1-6 / G7-12      the ``grade`` field grade1..grade6 / grade7..grade12.
A problem without a subject or grade (e.g. some records of the shipped sample) is in no subject
or grade category, as in the official code. IconQA problems get no categories.

Computed once at prepare time into the ``categories`` column of the prepared Parquet, so a
trial and the report read them without knowing where they came from.
"""
from __future__ import annotations

from trainables.data.records import Record

SUBJECTS: dict[str, str] = {"natural science": "NAT", "social science": "SOC",
                            "language science": "LAN"}
GRADE_BANDS: dict[str, str] = {**{f"grade{g}": "G1-6" for g in range(1, 7)},
                               **{f"grade{g}": "G7-12" for g in range(7, 13)}}
ORDER: tuple[str, ...] = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")
"""Every category, in the leaderboard's column order."""


def categories_of(rec: Record) -> tuple[str, ...]:
    """The leaderboard categories of one problem, in ORDER."""
    if rec.kind != "scienceqa":
        return ()
    meta = dict(rec.meta)
    found = {SUBJECTS.get(meta.get("subject", "")), GRADE_BANDS.get(meta.get("grade", ""))}
    has_text, has_image = bool(rec.hint), bool(rec.image)
    found |= {"TXT" if has_text else None, "IMG" if has_image else None,
              "NO" if not (has_text or has_image) else None}
    return tuple(c for c in ORDER if c in found)
