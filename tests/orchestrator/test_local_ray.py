"""A local sweep's Ray listens on loopback only (the socket listing itself is in
test_interrupts.py, with a real sweep); here the switch and the refusal."""
from __future__ import annotations

import os

import pytest

from orchestrator.driver import local_ray


def test_the_switch_is_set_for_a_local_sweep_only_and_put_back(monkeypatch):
    monkeypatch.delenv(local_ray.LOOPBACK_SWITCH, raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with local_ray.prefer_loopback(None):
        assert os.environ[local_ray.LOOPBACK_SWITCH] == "0"
    assert local_ray.LOOPBACK_SWITCH not in os.environ
    with local_ray.prefer_loopback("10.0.0.5:6379"):  # a cluster binds what its YAML says
        assert local_ray.LOOPBACK_SWITCH not in os.environ
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # inside a Ray job
    with local_ray.prefer_loopback(None):
        assert local_ray.LOOPBACK_SWITCH not in os.environ


def test_a_local_ray_that_would_listen_everywhere_is_refused(monkeypatch):
    import ray
    from ray._private import ray_constants
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)  # ray imported too early
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init was called"))
    with pytest.raises(local_ray.LoopbackError, match="every interface"):
        local_ray.start(None)


def test_a_local_ray_is_started_on_loopback(monkeypatch):
    import ray
    from ray._private import ray_constants
    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    local_ray.start(None)
    assert calls[0]["_node_ip_address"] == "127.0.0.1"
    assert calls[0]["include_dashboard"] is False and calls[0]["dashboard_host"] == "127.0.0.1"


def test_the_switch_is_on_before_the_space_is_prepared(monkeypatch, tmp_path):
    """prepare() imports ray for an ASHA sweep (orchestrator.driver.schedulers); Ray reads the
    switch at import, so the CLI sets it before prepare, not only around run()."""
    from orchestrator import sweep
    from orchestrator.driver import prepare as driver
    monkeypatch.delenv(local_ray.LOOPBACK_SWITCH, raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    seen = []

    def prepare(options):
        seen.append(os.environ.get(local_ray.LOOPBACK_SWITCH))
        raise driver.SweepError("stop here")
    monkeypatch.setattr(driver, "prepare", prepare)
    with pytest.raises(SystemExit):
        sweep.main(["--space", "smoke", "--storage", str(tmp_path / "rr")])
    assert seen == ["0"] and local_ray.LOOPBACK_SWITCH not in os.environ


@pytest.mark.parametrize("address", [None, "10.0.0.5:6379"])
def test_every_worker_waits_for_the_previous_trial_to_end(monkeypatch, address):
    """Reused actors: the next trial must not fail because the last one took > 2 s to return."""
    import ray
    from ray._private import ray_constants
    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(local_ray.REUSE_WAIT_VAR, raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    local_ray.start(address)
    assert calls[-1]["runtime_env"] == {"env_vars": {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "60"}}
    monkeypatch.setenv(local_ray.REUSE_WAIT_VAR, "5")  # the user's own value wins
    local_ray.start(address)
    assert calls[-1]["runtime_env"] == {"env_vars": {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "5"}}
