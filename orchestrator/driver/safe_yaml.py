"""Reading a user's YAML file without trusting it: bounded, strict, one-line errors.

PyYAML's ``safe_load`` runs no code but is still a hazard on hostile or careless input: a
400-byte alias bomb expands to gigabytes (minutes of CPU, all the memory it can get), deep
nesting overflows the Python stack, a FIFO or /dev/zero given as the file blocks or never ends,
duplicate keys silently keep the last value, and its error text is a multi-line excerpt of the
file. This loader:

- reads regular files only, at most ``max_bytes``, strictly UTF-8;
- refuses aliases (a search space never needs one) and nesting deeper than ``max_depth``;
- refuses duplicate mapping keys, naming the key and both lines;
- reads ``1e-4`` as a float (YAML 1.2, what users and ``--help`` write; YAML 1.1 says string);
- raises ``YamlInputError`` with one line: file, line, column, the problem.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from trainables.bounded_read import UnreadableInput, decode_utf8, read_regular
from trainables.defaults import MAX_SPACE_DEPTH, MAX_SPACE_FILE_BYTES
from trainables.excerpt import excerpt

# YAML 1.2 floats with an exponent and no sign or no dot (1e-4, 2E5, 1.0e4), which YAML 1.1's
# float pattern leaves as strings. Ints and dotted floats keep PyYAML's own resolvers.
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class YamlInputError(ValueError):
    """A YAML file that cannot be used; the one-line message names file, line and problem."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, deep nesting or duplicate keys (see the module docstring)."""

    max_depth = MAX_SPACE_DEPTH

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem=f"alias *{excerpt(event.anchor, 40)} refused (aliases can expand "
                        f"without bound; write the value out)", problem_mark=event.start_mark)
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise yaml.MarkedYAMLError(
                    problem=f"nested deeper than {self.max_depth} levels",
                    problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if first is not key_node.start_mark:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {excerpt(key, 40)} (first on line {first.line + 1}; "
                            f"YAML would silently keep the last)", problem_mark=key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT,
                                    list("-+0123456789"))


def read_bounded_text(path: Path, what: str, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``; YamlInputError otherwise."""
    try:
        return decode_utf8(read_regular(path, max_bytes))
    except UnreadableInput as err:
        raise YamlInputError(f"{what} {excerpt(str(path), 200)} {err}") from None


def load_yaml_file(path: Path, what: str = "YAML file",
                   max_bytes: int = MAX_SPACE_FILE_BYTES) -> Any:
    """Parse ``path`` with the strict loader; one-line YamlInputError on any problem."""
    return load_yaml_text(read_bounded_text(Path(path), what, max_bytes), f"{what} "
                          f"{excerpt(str(path), 200)}")


def load_yaml_text(text: str, where: str) -> Any:
    """Parse YAML text (``where`` names it in errors) with the strict loader."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        raise YamlInputError(f"{where} is not usable YAML{_position(err)}: "
                             f"{_problem(err)}") from None
    except yaml.YAMLError as err:
        raise YamlInputError(f"{where} is not usable YAML: {excerpt(str(err), 160)}") from None
    except RecursionError:  # belt and braces: the depth bound should stop it first
        raise YamlInputError(f"{where} is nested too deeply") from None
    finally:
        loader.dispose()


def _position(err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def _problem(err: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (err.context, err.problem) if p]
    return " ".join(" ".join(p.split()) for p in parts)[:200] or "malformed"
