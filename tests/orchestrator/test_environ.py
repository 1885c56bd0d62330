"""An environment variable set for a while comes back exactly as it was found."""
import os

import pytest

from orchestrator.environ import env_var, put_back

NAME = "INSTRUCTBLIP_TEST_ENVIRON"


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)


def test_an_unset_variable_is_unset_again_after_the_block():
    with env_var(NAME, "on"):
        assert os.environ[NAME] == "on"
    assert NAME not in os.environ


def test_a_set_variable_gets_its_value_back_even_after_an_exception(monkeypatch):
    monkeypatch.setenv(NAME, "mine")
    with pytest.raises(KeyError), env_var(NAME, "on"):
        assert os.environ[NAME] == "on"
        raise KeyError("boom")
    assert os.environ[NAME] == "mine"


def test_an_empty_value_is_a_value_not_unset(monkeypatch):
    monkeypatch.setenv(NAME, "")
    with env_var(NAME, "on"):
        pass
    assert os.environ[NAME] == ""
    put_back(NAME, None)
    assert NAME not in os.environ
    put_back(NAME, "x")
    assert os.environ[NAME] == "x"
