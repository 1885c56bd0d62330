"""The strict YAML loader: bounded, no aliases or duplicate keys, YAML 1.2 floats, one-line errors."""
from __future__ import annotations

import os
import time

import pytest

from orchestrator.driver.safe_yaml import YamlInputError, load_yaml_file, load_yaml_text


def test_exponent_floats_read_as_numbers_as_in_help():
    data = load_yaml_text("lr: 1e-4\na: 2E5\nb: -1.5e+3\nc: 3\nd: 1.0\ne: 1e\nf: e5\n", "t")
    assert data == {"lr": 1e-4, "a": 2e5, "b": -1500.0, "c": 3, "d": 1.0, "e": "1e", "f": "e5"}
    assert isinstance(data["c"], int)


def test_an_alias_bomb_is_refused_at_once():
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    started = time.monotonic()
    with pytest.raises(YamlInputError, match=r"line 2, column \d+: alias \*'a0' refused") as err:
        load_yaml_text("\n".join(levels), "bomb.yaml")
    assert time.monotonic() - started < 1 and len(str(err.value)) < 300


def test_duplicate_keys_name_both_lines():
    with pytest.raises(YamlInputError, match="line 3.*duplicate key 'epochs' .first on line 1"):
        load_yaml_text("epochs: 2\nranks: [1]\nepochs: 3\n", "s.yaml")


def test_deep_nesting_is_bounded_not_a_recursion_error():
    with pytest.raises(YamlInputError, match="nested deeper than 16 levels"):
        load_yaml_text("x: " + "[" * 100_000 + "]" * 100_000, "deep.yaml")


def test_python_tags_are_refused():
    with pytest.raises(YamlInputError, match="could not determine a constructor"):
        load_yaml_text("x: !!python/object/apply:os.system [echo hi]\n", "t")


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),
    (lambda p: p.write_bytes(b"x: 1\n" * 20_000), "more than the 65536 allowed"),
    (lambda p: p.write_bytes(b"x: \xc3\x28\n"), r"not UTF-8 text \(byte 3, line 1"),
    (lambda p: None, "does not exist"),
])
def test_files_that_are_not_small_utf8_regular_files(tmp_path, make, needle):
    path = tmp_path / "space.yaml"
    make(path)
    with pytest.raises(YamlInputError, match=needle) as err:
        load_yaml_file(path, "space file")
    assert "\n" not in str(err.value)


def test_syntax_errors_are_one_line_with_position():
    with pytest.raises(YamlInputError) as err:
        load_yaml_text("a: [1, 2\nb: 3\n", "s.yaml")
    message = str(err.value)
    assert "\n" not in message and "s.yaml is not usable YAML at line" in message


def test_the_help_example_is_a_valid_space(tmp_path):
    """--help's own YAML example (lr: 1e-4) used to be rejected: YAML 1.1 reads it as a string."""
    from orchestrator.driver.spaces import load_yaml_space
    from orchestrator.sweep import EPILOG
    example = EPILOG.split("YAML spaces: ", 1)[1].split("\n\n", 1)[0]
    (tmp_path / "help.yaml").write_text(example)
    space = load_yaml_space(tmp_path / "help.yaml")
    assert space.overrides["lr"] == 1e-4 and space.overrides["epochs"] == 4
    assert isinstance(space.overrides["lr"], float)
