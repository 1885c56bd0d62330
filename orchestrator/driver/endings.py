"""How a sweep that does not simply finish ends: what it says, what it leaves, its exit code.

Exit statuses (also in ``--help``): 0 done; 1 some trials failed; 2 bad input (nothing
started); 3 every trial ran but MLflow writes, and so Table 1, are pending (tracking outbox);
4 stopped before the storage filled up; 128 + N on signal N (130 SIGINT, 143 SIGTERM).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.driver.interrupts import SweepStop
from orchestrator.driver.options import SweepOptions

TRACKING_PENDING = 3
"""Exit status: every trial ran, but MLflow writes (and so Table 1) are still pending."""
STORAGE_FULL = 4
"""Exit status: stopped before the storage filled up; resumable once space is freed."""


def resume_command(argv: Sequence[str]) -> str:
    """The command that continues this sweep: the same arguments, plus --resume once."""
    argv = list(argv)
    return " ".join(["python -m orchestrator.sweep", *argv]
                    + ([] if "--resume" in argv else ["--resume"]))


def interrupted(tracker: Any, stop: SweepStop, options: SweepOptions) -> int:
    """End an interrupted sweep honestly: parent run KILLED, no Table 1, the --resume command."""
    if tracker.parent_run_id is not None:
        tracker.finish("KILLED")
        if tracker.close(wait_s=10.0):
            print(f"MLflow: {tracker.outbox.pending} updates wait in {tracker.outbox.dir}; "
                  f"--resume writes them first")
    again = resume_command(options.argv)
    if stop.signum is not None:
        why, then = f"interrupted by {stop.name}", "Continue with"
    else:
        why, then = f"stopped: {stop.name}", "Free some space, then continue with"
    print(f"\nsweep {why}. Finished trials are kept, unfinished ones keep their last "
          f"checkpoint, and the MLflow parent run is KILLED; no Table 1 was written. "
          f"{then}:\n  {again}", flush=True)
    return stop.exit_code


def pending_message(tracker: Any, name: str, options: SweepOptions) -> str:
    """Exactly what could not reach MLflow, where it waits, and the command that writes it."""
    box = tracker.outbox
    return (f"\nMLflow: {box.pending} updates ({box.describe_pending()}) could not be written to "
            f"{tracker.tracking_uri} ({box.last_error[:200]}); they are kept in {box.dir}. No "
            f"Table 1 was written. When the store answers again, write them and the report with:"
            f"\n  python -m orchestrator.results.report --experiment {name} --sync --storage "
            f"{options.storage} --cache-dir {options.cache_dir} --tracking-uri "
            f"{tracker.tracking_uri}\n(or rerun the sweep with --resume)")
