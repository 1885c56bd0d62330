"""Names are names: --name cannot move any write out of the directory the user chose."""
from __future__ import annotations

import pytest

from orchestrator.driver.names import UnsafeName, check_name, default_name, under


@pytest.mark.parametrize("name", ["sweep-full_grid", "a", "run.2", "lr=1e-4+r8", "X" * 100])
def test_safe_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "x/..", "/abs", "a/b", "a\\b", ".hidden",
                                  "-rf", "ok..x", "é", "a b", "a\nb", "a\0b", "X" * 101, "~root"])
def test_unsafe_names_fail_naming_the_value(name):
    with pytest.raises(UnsafeName, match="--name .* is not a safe name"):
        check_name(name)


def test_default_name_from_an_odd_file_stem_is_made_safe():
    assert default_name("my space (v2)") == "sweep-my_space_v2_"
    assert default_name("..") == "sweep-_"
    assert len(default_name("x" * 500)) <= 100


def test_under_refuses_escapes_and_symlinks_out(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert under(root, "a", "b") == root.resolve() / "a" / "b"
    for parts in (("..",), ("a", "..", ".."), ("/etc",), (".",)):
        with pytest.raises(UnsafeName, match="outside"):
            under(root, *parts, what="report directory")
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafeName, match="outside"):
        under(root, "link", "x")
