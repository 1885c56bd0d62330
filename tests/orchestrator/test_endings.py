"""The command a stopped or partly failed sweep tells the user to run next."""
from __future__ import annotations

from orchestrator.driver.endings import resume_command


def test_the_same_arguments_with_resume_once():
    assert resume_command(["--space", "smoke", "--name", "x"]) == \
        "python -m orchestrator.sweep --space smoke --name x --resume"
    assert resume_command(("--resume", "--space", "smoke")) == \
        "python -m orchestrator.sweep --resume --space smoke"
    assert resume_command([]) == "python -m orchestrator.sweep --resume"
