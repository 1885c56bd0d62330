"""The callbacks that end Tune's loop cleanly: a stop signal, and the storage filling up."""
from __future__ import annotations

import signal

import pytest

from orchestrator.driver.interrupts import Interrupted, SweepStop
from orchestrator.driver.tune_callbacks import MIN_FREE_BYTES, StopTune, StorageGuard


def test_storage_guard_stops_below_three_checkpoints_of_space(tmp_path):
    free = {"bytes": 10 * 2**30}
    stop = SweepStop()
    guard = StorageGuard(stop, str(tmp_path), code=4, period_s=0,
                         free_bytes=lambda path: free["bytes"])
    guard.on_trial_result(0, [], None, {"checkpoint_mb": 100.0})
    guard.on_step_begin(0, [])
    assert not stop.stopping
    free["bytes"] = 250 * 2**20  # less than 3 x 100 MiB
    guard.on_step_begin(1, [])
    assert stop.stopping and stop.exit_code == 4
    assert f"storage {tmp_path} is full (250.0 MiB free" in stop.name
    assert MIN_FREE_BYTES < 3 * 100 * 2**20


def test_storage_guard_ignores_cloud_storage():
    stop = SweepStop()
    StorageGuard(stop, "s3://bucket/x", code=4, period_s=0, free_bytes=lambda p: 0) \
        .on_step_begin(0, [])
    assert not stop.stopping


def test_stop_tune_asks_tune_to_stop_once(monkeypatch):
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *a: received.append(1))
    try:
        stop = SweepStop()
        callback = StopTune(stop)
        callback.on_step_begin(0, [])
        assert received == []
        stop.request("test", 5)
        callback.on_step_begin(1, [])
        callback.on_step_begin(2, [])
        assert received == [1]
        callback.setup()  # a new fit() (the retunes): asked again
        callback.on_step_begin(3, [])
        assert received == [1, 1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_signals_raise_before_tune_and_are_deferred_during_it():
    before = signal.getsignal(signal.SIGINT)
    early = SweepStop()
    early.install()
    try:
        with pytest.raises(Interrupted) as err:
            signal.raise_signal(signal.SIGTERM)
        assert err.value.signum == signal.SIGTERM and early.exit_code == 143
    finally:
        early.restore()
    stop = SweepStop()
    stop.install()
    try:
        stop.defer = True
        signal.raise_signal(signal.SIGINT)  # recorded: Tune stops at its next step
        assert stop.stopping and stop.exit_code == 130 and stop.name == "SIGINT"
        with pytest.raises(Interrupted):  # the impatient second Ctrl-C
            signal.raise_signal(signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is before  # restore() puts back what was there


def test_storage_guard_reads_the_real_filesystem_by_default(tmp_path):
    stop = SweepStop()
    guard = StorageGuard(stop, str(tmp_path), code=4, period_s=0)
    guard.on_step_begin(0, [])  # statvfs of a test machine's tmp: far above the threshold
    assert not stop.stopping
