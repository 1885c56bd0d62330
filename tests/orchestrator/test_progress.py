"""The compact progress line that replaces Ray Tune's 30-second status tables."""
from __future__ import annotations

import io
from dataclasses import dataclass, field

from orchestrator.driver.progress import ProgressLine, counts


@dataclass
class FakeTrial:
    name: str
    status: str
    last_result: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


# The stopped trial's last result says done=True: Tune adds it when its scheduler says STOP.
TRIALS = [FakeTrial("a|t5|llm_lora/all|r8", "TERMINATED", {"best_val_acc": 0.72, "test_acc": 0.7,
                                                             "done": True}),
          FakeTrial("a|t5|baseline/none|r0", "TERMINATED", {"best_val_acc": 0.5, "done": True}),
          FakeTrial("b|t5|qformer_lora/ffn|r4", "ERROR"),
          FakeTrial("b|t5|qformer_lora/ffn|r8", "RUNNING", {"best_val_acc": 0.61}),
          FakeTrial("b|t5|qformer_lora/ffn|r1", "PENDING")]


def test_the_line_counts_and_names_the_best():
    clock = Clock()
    clock.now = 252
    reporter = ProgressLine(clock=lambda: clock(), out=io.StringIO())
    reporter._started = 0
    assert counts(TRIALS) == (1, 1, 1, 1, 1)
    diverged = FakeTrial("a|t5|llm_lora/all|r1", "TERMINATED", {"diverged": True, "done": True})
    assert counts([diverged]) == (1, 0, 0, 0, 0)  # it ended by itself: finished, not stopped
    assert reporter.line(TRIALS) == ("[sweep 4m12s] 3/5 ended (1 finished, 1 stopped, 1 error) | "
                                     "1 running, 1 waiting | best val 72.0% a|t5|llm_lora/all|r8")


def test_it_reports_on_change_and_otherwise_every_period():
    clock, out = Clock(), io.StringIO()
    reporter = ProgressLine(period_s=30, min_gap_s=5, out=out, clock=clock)
    assert reporter.should_report(TRIALS)
    reporter.report(TRIALS, done=False)
    clock.now = 10
    assert not reporter.should_report(TRIALS)  # nothing changed, period not over
    changed = TRIALS[:-1] + [FakeTrial("b|t5|qformer_lora/ffn|r1", "RUNNING")]
    assert reporter.should_report(changed)  # a change, 5 s after the last line
    clock.now = 31
    assert reporter.should_report(TRIALS) and reporter.should_report(TRIALS, done=True)
    assert out.getvalue().count("\n") == 1
