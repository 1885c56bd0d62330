"""check_record, field by field: each rule rejects exactly what it should with one message naming
file, pid and field (the expected messages are written out here, not built by the code)."""
from __future__ import annotations

import dataclasses
import io

import pytest
from PIL import Image

from trainables.data.errors import DataError
from trainables.data.records import (
    Record,
    answer_field,
    check_record,
    choices_field,
    read_image,
    read_json,
    safe_join,
    text_field,
)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (255, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


GOOD = Record(pid="42", split="val", kind="scienceqa", question="Which is red?", choices=("a", "b", "c"),
              answer_index=2, hint="", lecture="", image=_png())


@pytest.mark.parametrize("change", [
    {}, {"answer_index": 0}, {"choices": ("x", "y"), "answer_index": 1}, {"split": "train"},
    {"split": "test"}, {"question": " q "}, {"choices": ("a", " b "), "answer_index": 1},
])
def test_a_usable_record_passes_unchanged(change):
    rec = dataclasses.replace(GOOD, **change)
    assert check_record(rec, "f.json") is rec


@pytest.mark.parametrize("change, message", [
    ({"question": ""}, "field 'question': question is empty or not a string"),
    ({"question": " \n"}, "field 'question': question is empty or not a string"),
    ({"question": None}, "field 'question': question is empty or not a string"),
    ({"choices": ("a",), "answer_index": 0}, "field 'choices': needs at least 2 choices, got ['a']"),
    ({"choices": ()}, "field 'choices': needs at least 2 choices, got []"),
    ({"choices": ("a", " ")}, "field 'choices': choice ' ' is empty or not a string"),
    ({"choices": ("a", 3)}, "field 'choices': choice 3 is empty or not a string"),
    ({"answer_index": 3}, "field 'answer': answer index 3 out of range for 3 choices"),
    ({"answer_index": -1}, "field 'answer': answer index -1 out of range for 3 choices"),
    ({"answer_index": True}, "field 'answer': answer index True out of range for 3 choices"),
    ({"answer_index": 1.0}, "field 'answer': answer index 1.0 out of range for 3 choices"),
    ({"split": "validation"}, "field 'split': split 'validation' not one of ('train', 'val', 'test')"),
    ({"image": b"\x89PNG\r\n"}, "field 'image': image cannot be decoded (UnidentifiedImageError: "),
])
def test_an_unusable_record_is_one_error_naming_file_pid_and_field(change, message):
    with pytest.raises(DataError) as info:
        check_record(dataclasses.replace(GOOD, **change), "data/f.json")
    assert str(info.value).startswith("file data/f.json, pid '42', " + message), str(info.value)
    assert (info.value.file, info.value.pid, info.value.field) == ("data/f.json", "42", message[7:].split("'")[0])


def _error(call) -> DataError:
    with pytest.raises(DataError) as info:
        call()
    return info.value


def test_optional_text_choices_and_answer_fields():
    raw = {"hint": "h", "lecture": None, "choices": ["a", "b"], "answer": 1}
    assert text_field(raw, "hint", pid="7", file="p.json") == "h"
    assert text_field(raw, "lecture", pid="7", file="p.json") == ""  # null: absent
    assert text_field(raw, "solution", pid="7", file="p.json") == ""  # missing: absent
    assert choices_field(raw, pid="7", file="p.json") == ("a", "b")
    assert answer_field(raw, pid="7", file="p.json") == 1
    assert str(_error(lambda: text_field({"hint": 5}, "hint", pid="7", file="p.json"))) == \
        "file p.json, pid '7', field 'hint': expected a string, got 5"
    assert str(_error(lambda: choices_field({"choices": "ab"}, pid="7", file="p.json"))) == \
        "file p.json, pid '7', field 'choices': choices must be a list, got 'ab'"
    for bad in (True, "1", None, 1.0):
        assert str(_error(lambda bad=bad: answer_field({"answer": bad}, pid="7", file="p.json"))) == \
            f"file p.json, pid '7', field 'answer': answer must be an integer index, got {bad!r}"


def test_safe_join_stays_under_the_root(tmp_path):
    (tmp_path / "images").mkdir()
    assert safe_join(tmp_path, "images", "1.png", pid="7", field="image", file="p.json") == \
        tmp_path.resolve() / "images" / "1.png"
    escape = _error(lambda: safe_join(tmp_path, "images", "../..", pid="7", field="image", file="p.json"))
    assert str(escape) == f"file p.json, pid '7', field 'image': path 'images/../..' escapes the data root {tmp_path}"
    for part, shown in (("", "''"), (None, "None")):
        empty = _error(lambda part=part: safe_join(tmp_path, "images", part, pid="7", field="image", file="p.json"))
        assert str(empty) == f"file p.json, pid '7', field 'image': path component {shown} is empty or not a string"


def test_read_image_says_missing_for_an_absent_file(tmp_path):
    (tmp_path / "a.png").write_bytes(b"png bytes")
    assert read_image(tmp_path / "a.png", pid="7", field="image", file="p.json") == b"png bytes"
    missing = _error(lambda: read_image(tmp_path / "b.png", pid="7", field="image", file="p.json"))
    assert str(missing) == f"file p.json, pid '7', field 'image': image file {tmp_path / 'b.png'} is missing"


def test_read_image_names_why_an_existing_path_cannot_be_read(tmp_path):
    (tmp_path / "d.png").mkdir()
    error = _error(lambda: read_image(tmp_path / "d.png", pid="7", field="image", file="p.json"))
    assert str(error) == \
        f"file p.json, pid '7', field 'image': image file {tmp_path / 'd.png'} is a directory, not a file"


def test_read_json_rejects_a_duplicate_key_naming_it(tmp_path):
    (tmp_path / "p.json").write_text('{"7": {"a": 1}, "8": {}, "7": {}}')
    error = _error(lambda: read_json(tmp_path / "p.json"))
    assert str(error) == f"file {tmp_path / 'p.json'}, pid '7': duplicate key (duplicate pid?)"
    (tmp_path / "q.json").write_text('{"7": {"a": 1}, "8": {"a": 1}}')  # the same key in two objects is fine
    assert read_json(tmp_path / "q.json") == {"7": {"a": 1}, "8": {"a": 1}}


def test_read_json_names_the_file_when_it_cannot_be_read_or_is_nested_too_deeply(tmp_path):
    for name, content, problem in (("missing.json", None, "does not exist"),
                                   ("folder.json", "dir", "is a directory, not a file"),
                                   ("deep.json", "[" * 100_000 + "]" * 100_000, "JSON nested too deeply")):
        path = tmp_path / name
        if content == "dir":
            path.mkdir()
        elif content is not None:
            path.write_text(content)
        assert str(_error(lambda path=path: read_json(path))) == f"file {path}: {problem}"
