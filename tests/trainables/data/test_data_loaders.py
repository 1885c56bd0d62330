"""Official-layout loaders read the real samples unchanged and keep only what the paper uses."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import ASSETS

from trainables.data.iconqa import is_iconqa_root, load_iconqa
from trainables.data.scienceqa import is_scienceqa_root, load_scienceqa


def test_shared_scienceqa_400_load_unchanged(shared: Path) -> None:
    raw = json.loads((shared / "scienceqa" / "problems.json").read_text())
    splits = json.loads((shared / "scienceqa" / "pid_splits.json").read_text())
    recs = load_scienceqa(shared / "scienceqa")
    assert len(recs) == 400
    assert {s: sum(r.split == s for r in recs) for s in splits} == {s: len(v) for s, v in splits.items()}
    for rec in recs:
        src = raw[rec.pid]
        assert (rec.question, list(rec.choices), rec.answer_index) == (src["question"], src["choices"], src["answer"])
        assert rec.hint == (src["hint"] or "") and rec.lecture == (src["lecture"] or "")
        assert rec.image == (shared / "scienceqa" / "images" / src["split"] / rec.pid / "image.png").read_bytes()
        assert dict(rec.meta)["skill"] == (src["skill"] or "")


def test_shared_iconqa_keeps_only_choose_txt(shared: Path) -> None:
    root = shared / "iconqa"
    raw = json.loads((root / "iconqa_data" / "problems.json").read_text())
    recs = load_iconqa(root)
    assert len(recs) == 30
    assert all(raw[r.pid]["ques_type"] == "choose_txt" for r in recs)
    assert sum(v["ques_type"] != "choose_txt" for v in raw.values()) == 100  # choose_img + fill_in_blank skipped
    for rec in recs:
        assert list(rec.choices) == raw[rec.pid]["choices"] and rec.answer_index == raw[rec.pid]["answer"]
        folder = root / "iconqa_data" / "iconqa" / "test" / "choose_txt" / rec.pid
        assert rec.image == (folder / "image.png").read_bytes()


def test_iconqa_walk_mode_equals_index_mode(shared: Path, tmp_path: Path) -> None:
    indexed = load_iconqa(shared / "iconqa")
    tree = tmp_path / "iconqa_data"
    shutil.copytree(shared / "iconqa" / "iconqa_data" / "iconqa", tree / "iconqa")  # no index files
    walked = load_iconqa(tmp_path)
    assert sorted(walked, key=lambda r: r.pid) == sorted(indexed, key=lambda r: r.pid)


def test_iconqa_walk_mode_orders_problems_by_numeric_pid(iconqa_copy: Path) -> None:
    """Without index files the tree is walked; pids are numbers, so '7' comes before '44'
    (not after it, as plain string order would put it)."""
    for index in ("pid_splits.json", "problems.json"):
        (iconqa_copy / "iconqa_data" / index).unlink()
    records = load_iconqa(iconqa_copy)
    by_split = {s: [r.pid for r in records if r.split == s] for s in ("train", "val", "test")}
    assert sum(map(len, by_split.values())) == len(records) >= 10
    assert any(sorted(pids) != pids for pids in by_split.values())  # string order differs
    for pids in by_split.values():
        assert pids == sorted(pids, key=int)


def test_shipped_samples_load_with_their_demo_splits() -> None:
    sqa = load_scienceqa(ASSETS / "scienceqa")
    assert [sum(r.split == s for r in sqa) for s in ("train", "val", "test")] == [12, 6, 6]
    assert any(r.lecture for r in sqa) and any(not r.hint for r in sqa) and any(len(r.choices) == 5 for r in sqa)
    icon = load_iconqa(ASSETS / "iconqa")
    assert [sum(r.split == s for r in icon) for s in ("train", "val", "test")] == [5, 2, 3]
    assert (ASSETS / "scienceqa" / "LICENSE-DATA-ScienceQA.md").is_file()
    assert (ASSETS / "iconqa" / "LICENSE-IconQA.md").is_file()


def test_shipped_scienceqa_loads_every_field_unchanged() -> None:
    root = ASSETS / "scienceqa"
    raw = json.loads((root / "problems.json").read_text())
    splits = json.loads((root / "pid_splits.json").read_text())
    recs = load_scienceqa(root)
    assert [(r.pid, r.split) for r in recs] == [(pid, s) for s in ("train", "val", "test") for pid in splits[s]]
    meta_keys = ("category", "grade", "skill", "solution", "subject", "task", "topic")
    for rec in recs:
        src = raw[rec.pid]
        assert (rec.kind, rec.question, list(rec.choices), rec.answer_index) == \
            ("scienceqa", src["question"], src["choices"], src["answer"])
        assert (rec.hint, rec.lecture) == (src["hint"] or "", src["lecture"] or "")
        assert rec.image == (root / "images" / src["split"] / rec.pid / src["image"]).read_bytes()
        assert rec.meta == tuple((k, src[k] or "") for k in meta_keys)


def test_shipped_iconqa_loads_every_field_unchanged_from_either_folder() -> None:
    data = ASSETS / "iconqa" / "iconqa_data"
    raw = json.loads((data / "problems.json").read_text())
    splits = json.loads((data / "pid_splits.json").read_text())
    recs = load_iconqa(ASSETS / "iconqa")
    assert [(r.pid, r.split) for r in recs] == \
        [(pid, s) for s in ("train", "val", "test") for pid in splits[f"choose_txt_{s}"]]
    for rec in recs:
        src = raw[rec.pid]
        assert (rec.kind, rec.question, list(rec.choices), rec.answer_index, rec.hint, rec.lecture) == \
            ("iconqa", src["question"], src["choices"], src["answer"], "", "")
        assert rec.image == (data / "iconqa" / src["split"] / "choose_txt" / rec.pid / "image.png").read_bytes()
        assert rec.meta == (("grade", src["grade"]), ("label", src["label"]), ("ques_type", "choose_txt"))
    assert load_iconqa(data) == recs  # iconqa_data/ itself is accepted too


def test_which_layout_a_folder_holds(tmp_path: Path) -> None:
    assert is_scienceqa_root(ASSETS / "scienceqa") and not is_scienceqa_root(ASSETS / "iconqa")
    for only in ("problems.json", "pid_splits.json"):  # ScienceQA needs both index files
        (tmp_path / only).mkdir()
        shutil.copy(ASSETS / "scienceqa" / only, tmp_path / only / only)
        assert not is_scienceqa_root(tmp_path / only)
    assert is_iconqa_root(ASSETS / "iconqa") and is_iconqa_root(ASSETS / "iconqa" / "iconqa_data")
    assert not is_iconqa_root(ASSETS / "scienceqa")
