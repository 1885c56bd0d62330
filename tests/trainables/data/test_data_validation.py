"""Every kind of bad input is one DataError naming file, pid and field, before any training."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ASSETS, edit_json

from trainables.data.errors import DataError
from trainables.data.hf_parquet import load_hf_scienceqa
from trainables.data.iconqa import load_iconqa
from trainables.data.prepare import ensure_prepared, prepare_all, read_split_table
from trainables.data.scienceqa import load_scienceqa


def _fails(load, root: Path, *needles: str) -> str:
    with pytest.raises(DataError) as info:
        load(root)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_missing_image_of_an_img_record(shared: Path) -> None:
    _fails(load_scienceqa, shared / "scienceqa_schema_sample", "problems.json", "pid '1'", "'image'", "missing")


def test_answer_out_of_range(sqa_copy: Path) -> None:
    edit_json(sqa_copy / "problems.json", lambda d: d["42"].update(answer=5))
    _fails(load_scienceqa, sqa_copy, "pid '42'", "field 'answer'", "out of range")


@pytest.mark.parametrize("choices", [[], ["only"]])
def test_empty_or_single_choices(sqa_copy: Path, choices: list[str]) -> None:
    edit_json(sqa_copy / "problems.json", lambda d: d["86"].update(choices=choices))
    _fails(load_scienceqa, sqa_copy, "pid '86'", "field 'choices'")


def test_duplicate_pid_in_problems_json(sqa_copy: Path) -> None:
    f = sqa_copy / "problems.json"
    text = f.read_text()
    f.write_text(text.rstrip().rstrip("}") + ', "42": {"question": "x"}}')
    _fails(load_scienceqa, sqa_copy, "problems.json", "pid '42'", "duplicate")


def test_duplicate_pid_across_splits(sqa_copy: Path) -> None:
    edit_json(sqa_copy / "pid_splits.json", lambda d: d["test"].append(d["train"][0]))
    _fails(load_scienceqa, sqa_copy, "pid_splits.json", "duplicate pid")


@pytest.mark.parametrize("text", ["{not json", '{"42": {"question": "trunc'])
def test_invalid_or_truncated_json(sqa_copy: Path, text: str) -> None:
    (sqa_copy / "problems.json").write_text(text)
    _fails(load_scienceqa, sqa_copy, "problems.json", "invalid or truncated JSON")


def test_image_path_escaping_the_root(sqa_copy: Path) -> None:
    edit_json(sqa_copy / "problems.json", lambda d: d["61"].update(image="../../../../../etc/passwd"))
    _fails(load_scienceqa, sqa_copy, "pid '61'", "field 'image'", "escapes the data root")


def test_iconqa_split_escaping_the_root(iconqa_copy: Path) -> None:
    edit_json(iconqa_copy / "iconqa_data" / "problems.json", lambda d: d["7"].update(split="../../.."))
    _fails(load_iconqa, iconqa_copy, "pid '7'", "escapes the data root")


def test_corrupt_png(sqa_copy: Path) -> None:
    img = sqa_copy / "images" / "test" / "184" / "image.png"
    img.write_bytes(img.read_bytes()[:200])  # truncated
    _fails(load_scienceqa, sqa_copy, f"file {sqa_copy / 'problems.json'}", "pid '184'", "field 'image'",
           "cannot be decoded (OSError: ")  # PIL's error for a truncated file, by type


def test_pid_in_splits_absent_from_problems(iconqa_copy: Path) -> None:
    edit_json(iconqa_copy / "iconqa_data" / "pid_splits.json", lambda d: d["choose_txt_val"].append("999999"))
    _fails(load_iconqa, iconqa_copy, "pid_splits.json", "pid '999999'", "absent from problems.json")


def test_hub_parquet_missing_a_required_column(tmp_path: Path) -> None:
    import pyarrow as pa
    pq.write_table(pa.table({"question": ["q"], "choices": [["a", "b"]], "answer": [0]}),
                   tmp_path / "train-00000-of-00001.parquet")
    _fails(load_hf_scienceqa, tmp_path, "train-00000-of-00001.parquet", "field 'image'", "required column")


def test_prepared_parquet_missing_a_required_column(tmp_path: Path) -> None:
    out = ensure_prepared("sample-iconqa", cache_dir=tmp_path)
    table = pq.read_table(out / "val.parquet").drop(["prompt"])
    pq.write_table(table, out / "val.parquet")
    with pytest.raises(DataError, match="val.parquet.*field 'prompt'"):
        read_split_table(out, "val")


def test_bad_data_leaves_no_prepared_folder(sqa_copy: Path, tmp_path: Path) -> None:
    edit_json(sqa_copy / "problems.json", lambda d: d["42"].update(answer=-1))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="pid '42'"):
        ensure_prepared("scienceqa", data_root=sqa_copy, cache_dir=cache)
    assert not cache.exists() or list(cache.iterdir()) == []  # not even a temp folder is left


def test_a_bad_benchmark_leaves_no_trace_of_a_good_one(sqa_copy: Path, tmp_path: Path) -> None:
    edit_json(sqa_copy / "problems.json", lambda d: d["42"].update(answer=-1))
    fresh = tmp_path / "a" / "b" / "cache"  # three folders prepare_all would create
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "note.txt").write_text("mine")
    with pytest.raises(DataError, match="pid '42'"):
        prepare_all([("sample-iconqa", None, fresh), ("sample-iconqa", None, kept),
                     ("scienceqa", sqa_copy, fresh)])
    assert not (tmp_path / "a").exists()
    assert [p.name for p in kept.iterdir()] == ["note.txt"]  # a folder it did not create stays
    good = prepare_all([("sample-iconqa", None, fresh)])
    assert good[0].parent == fresh and (good[0] / "manifest.json").is_file()


def _set(key: str, field: str, value):
    def change(d):
        d[key][field] = value
    return change


def _replace(key: str, value):
    def change(d):
        d[key] = value
    return change


# (file to edit, edit, the whole message after "file <root>/<file>, "); pid 42 is listed under train
SQA_ERRORS = [
    ("problems.json", _replace("42", 5), "pid '42': problem must be an object, got int"),
    ("problems.json", _set("42", "image", 5), "pid '42', field 'image': image must be a file name, got 5"),
    ("problems.json", _set("42", "split", 3), "pid '42', field 'split': split must be a non-empty string, got 3"),
    ("problems.json", _set("42", "split", ""), "pid '42', field 'split': split must be a non-empty string, got ''"),
    ("problems.json", _set("42", "question", 5), "pid '42', field 'question': expected a string, got 5"),
    ("problems.json", _set("42", "choices", "ab"), "pid '42', field 'choices': choices must be a list, got 'ab'"),
    ("problems.json", _set("42", "answer", "1"),
     "pid '42', field 'answer': answer must be an integer index, got '1'"),
    ("problems.json", _set("42", "hint", 7), "pid '42', field 'hint': expected a string, got 7"),
    ("problems.json", _set("42", "lecture", 7), "pid '42', field 'lecture': expected a string, got 7"),
    ("problems.json", _set("42", "skill", 7), "pid '42', field 'skill': expected a string, got 7"),
    ("problems.json", _set("42", "image", "gone.png"),
     "pid '42', field 'image': image file {root}/images/test/42/gone.png is missing"),
    ("problems.json", _set("42", "image", "../../../../x.png"),
     "pid '42', field 'image': path 'images/test/42/../../../../x.png' escapes the data root {root}"),
    ("pid_splits.json", _replace("val", "42"), "field 'val': split list 'val' is not a list"),
    ("pid_splits.json", lambda d: d["val"].append("42"),
     "pid '42', field 'val': duplicate pid, listed in 'train' and 'val'"),
    ("pid_splits.json", lambda d: d["test"].append("999999"),
     "pid '999999', field 'test': pid is listed but absent from problems.json"),
]


@pytest.mark.parametrize("name, change, message", SQA_ERRORS)
def test_scienceqa_errors_name_file_pid_field_and_problem(sqa_copy: Path, name, change, message) -> None:
    edit_json(sqa_copy / name, change)
    file = sqa_copy / name
    with pytest.raises(DataError) as info:
        load_scienceqa(sqa_copy)
    assert str(info.value) == f"file {file}, {message.format(root=sqa_copy)}"


@pytest.mark.parametrize("name, what", [("problems.json", "pid -> problem"),
                                        ("pid_splits.json", "split name -> list of pids")])
def test_an_index_file_that_is_not_an_object(sqa_copy: Path, iconqa_copy: Path, name, what) -> None:
    for root, load in ((sqa_copy, load_scienceqa), (iconqa_copy / "iconqa_data", load_iconqa)):
        (root / name).write_text("[]")
        with pytest.raises(DataError) as info:
            load(root)
        assert str(info.value) == f"file {root / name}: expected an object of {what}"


def test_scienceqa_skips_problems_without_an_image_and_splits_not_listed(sqa_copy: Path) -> None:
    full = load_scienceqa(sqa_copy)
    edit_json(sqa_copy / "problems.json", _set("42", "image", None))  # a text-only problem
    edit_json(sqa_copy / "pid_splits.json", lambda d: d.pop("val") and d.update(minival=["43"]))
    kept = load_scienceqa(sqa_copy)
    assert kept == [r for r in full if r.pid != "42" and r.split != "val"]


def test_pids_listed_as_numbers_are_read_as_names(sqa_copy: Path) -> None:
    full = load_scienceqa(sqa_copy)
    edit_json(sqa_copy / "pid_splits.json", lambda d: d.update(train=[int(p) for p in d["train"]]))
    assert load_scienceqa(sqa_copy) == full


def test_iconqa_problem_errors_and_its_folder_from_the_listed_split(iconqa_copy: Path) -> None:
    data = iconqa_copy / "iconqa_data"
    problems = data / "problems.json"
    listed = json.loads((data / "pid_splits.json").read_text())
    pid = listed["choose_txt_train"][0]  # its files are under iconqa/test/ (a re-split)
    for change, message in ((_replace(pid, []), f"pid '{pid}': problem must be an object, got list"),
                            (_set(pid, "split", 5), f"pid '{pid}', field 'split': split must be a string, got 5")):
        edit_json(problems, change)
        with pytest.raises(DataError) as info:
            load_iconqa(iconqa_copy)
        assert str(info.value) == f"file {problems}, {message}"
        shutil.copy(ASSETS / "iconqa" / "iconqa_data" / "problems.json", problems)
    edit_json(problems, lambda d: d[pid].pop("split"))  # no own split: the listed one names the folder
    with pytest.raises(DataError) as info:
        load_iconqa(iconqa_copy)
    image = data / "iconqa" / "train" / "choose_txt" / pid / "image.png"
    assert str(info.value) == f"file {problems}, pid '{pid}', field 'image': image file {image} is missing"


def test_iconqa_keeps_listed_problems_of_its_subtask_only(iconqa_copy: Path) -> None:
    data = iconqa_copy / "iconqa_data"
    full = load_iconqa(iconqa_copy)
    other, untyped = full[0].pid, full[1].pid
    edit_json(data / "problems.json", lambda d: d[other].update(ques_type="choose_img") or d[untyped].pop("ques_type"))
    kept = load_iconqa(iconqa_copy)
    assert [r.pid for r in kept] == [r.pid for r in full if r.pid != other]
    assert dict(kept[0].meta)["ques_type"] == ""  # an untyped problem is kept, its type absent


def test_iconqa_without_index_files_or_problem_folders(tmp_path: Path, iconqa_copy: Path) -> None:
    (tmp_path / "iconqa" / "train" / "choose_img").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        load_iconqa(tmp_path)
    assert str(info.value) == f"file {tmp_path}: no iconqa/<split>/choose_txt/<pid>/ folders found"
    data = iconqa_copy / "iconqa_data"
    (data / "problems.json").unlink()  # one index file left: not the index-free mode
    with pytest.raises(DataError) as info:
        load_iconqa(iconqa_copy)
    assert str(info.value) == f"file {data / 'problems.json'}: does not exist"


def test_iconqa_image_path_and_walk_mode_errors_name_their_file(iconqa_copy: Path) -> None:
    data = iconqa_copy / "iconqa_data"
    edit_json(data / "problems.json", _set("7", "split", "../../.."))
    with pytest.raises(DataError) as info:
        load_iconqa(iconqa_copy)
    assert str(info.value) == (f"file {data / 'problems.json'}, pid '7', field 'image': path "
                               f"'iconqa/../../../choose_txt/7/image.png' escapes the data root {data}")
    for index in ("pid_splits.json", "problems.json"):  # the index-free mode: one data.json per problem
        (data / index).unlink()
    problem = data / "iconqa" / "test" / "choose_txt" / "7" / "data.json"
    edit_json(problem, lambda d: d.update(answer="1"))
    with pytest.raises(DataError) as info:
        load_iconqa(iconqa_copy)
    assert str(info.value) == f"file {problem}, pid '7', field 'answer': answer must be an integer index, got '1'"


@pytest.mark.parametrize("field, value, problem", [
    ("question", 5, "expected a string, got 5"), ("question", " ", "question is empty or not a string"),
    ("choices", "ab", "choices must be a list, got 'ab'"), ("answer", "1", "answer must be an integer index, got '1'"),
    ("grade", 5, "expected a string, got 5"),
])
def test_iconqa_field_errors_name_file_pid_and_field(iconqa_copy: Path, field, value, problem) -> None:
    problems = iconqa_copy / "iconqa_data" / "problems.json"
    edit_json(problems, _set("7", field, value))
    with pytest.raises(DataError) as info:
        load_iconqa(iconqa_copy)
    assert str(info.value) == f"file {problems}, pid '7', field '{field}': {problem}"
