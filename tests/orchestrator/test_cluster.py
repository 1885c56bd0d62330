"""orchestrator.driver.cluster: a cluster address that does not answer is a clear error in seconds.
(The storage-sharing check needs a multi-node cluster: tests/cluster/test_node_loss.py.)"""
from __future__ import annotations

import socket
import time

import pytest

from orchestrator.driver.cluster import ClusterError, check_address, parse_address


def free_port(host: str = "127.0.0.9") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address, target", [
    ("127.0.0.3:6390", ("127.0.0.3", 6390)),
    ("head.example:6379", ("head.example", 6379)),
    ("head.example", ("head.example", 6379)),
    ("ray://127.0.0.3:10011", ("127.0.0.3", 10011)),
    ("ray://head.example", ("head.example", 10001)),
    ("http://127.0.0.3:8275", ("127.0.0.3", 8275)),
    ("local", None),
    ("auto", None),
])
def test_parse_address_finds_what_to_probe(address: str, target) -> None:
    assert parse_address(address) == target


def test_parse_address_rejects_unknown_schemes() -> None:
    with pytest.raises(ClusterError, match=r"unknown scheme 'grpc'"):
        parse_address("grpc://127.0.0.3:6390")


def test_address_that_does_not_answer_fails_fast_and_says_what_to_do(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = f"127.0.0.9:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ClusterError) as err:
        check_address(address, timeout_s=2)
    assert time.monotonic() - started < 3
    message = str(err.value)
    assert message.startswith(f"Ray cluster address '{address}' (--address) does not answer")
    assert f"ray status --address {address}" in message and "Nothing was started" in message


def test_ray_address_from_the_environment_is_checked_too(monkeypatch) -> None:
    address = f"127.0.0.9:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(ClusterError, match=r"\(\$RAY_ADDRESS\) does not answer"):
        check_address(None, timeout_s=2)


def test_listening_address_and_local_ray_pass(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_address(None)
    check_address("local")
    with socket.socket() as server:
        server.bind(("127.0.0.9", 0))
        server.listen(1)
        check_address(f"127.0.0.9:{server.getsockname()[1]}", timeout_s=2)


@pytest.mark.integration
def test_waiting_for_gpus_that_never_come_is_a_clear_error_in_bounded_time() -> None:
    import ray

    from orchestrator.driver.cluster import wait_for_gpus
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        assert wait_for_gpus(0) == 0  # CPU-only sweeps never wait
        started = time.monotonic()
        with pytest.raises(ClusterError, match=r"--gpus-per-trial 1, but no GPU joined the Ray cluster within 2s"):
            wait_for_gpus(1, timeout_s=2, poll_s=0.5)
        assert time.monotonic() - started < 10
    finally:
        ray.shutdown()
