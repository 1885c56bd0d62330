"""Starting the sweep's Ray: a local Ray listens on loopback only; a cluster binds what its YAML
(``ray start --node-ip-address ...``) says.

Why: Ray on Linux replaces 127.0.0.1 with the machine's external address and its gRPC servers
bind every interface, so a default local sweep left the GCS, the raylet, the workers and the
agents (including three unauthenticated Prometheus ``/metrics`` endpoints) reachable from the
network. A single-machine sweep needs none of that. Ray's own switch for a loopback-only node
is ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (then the node address stays 127.0.0.1, and its
servers bind 127.0.0.1 only); it is read when ``ray`` is first imported, so ``prefer_loopback``
runs before that, and ``start`` refuses to start a local Ray that would not be on loopback.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from orchestrator.driver.cluster import resolve_address
from orchestrator.environ import env_var

LOOPBACK = "127.0.0.1"
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's constant ENABLE_RAY_CLUSTER: when 0, a node's address is 127.0.0.1 and stays so."""


REUSE_WAIT_VAR = "TUNE_FUNCTION_THREAD_TIMEOUT_S"
REUSE_WAIT_S = "60"
"""How long a reused actor waits for the previous trial's thread to end (Ray's default: 2 s).

Why: with ``reuse_actors`` the next trial starts only once the last one's function has returned,
and after its final report a trial still frees its model and closes its files. On a loaded
2-core machine (Ray runs its workers niced) that took over 2 s, and Tune then failed the NEXT
trial ("Could not re-use actor ... reset_config()"), which cost a retry and, three times in a
row, the cell. A thread that really hangs still fails the trial, after 60 s."""


def worker_env() -> dict[str, str]:
    """Environment every Ray worker of the sweep gets (a value the user exported wins)."""
    return {REUSE_WAIT_VAR: os.environ.get(REUSE_WAIT_VAR, REUSE_WAIT_S)}


class LoopbackError(RuntimeError):
    """A local Ray could not be started on loopback only."""


@contextlib.contextmanager
def prefer_loopback(address: str | None) -> Iterator[None]:
    """While open, and before ``ray`` is imported: a local sweep (no --address, no $RAY_ADDRESS)
    gets a loopback-only Ray (every Ray process it starts inherits the switch). The variable is
    put back on exit, so an in-process caller's later Ray is not affected."""
    local = resolve_address(address) is None
    with env_var(LOOPBACK_SWITCH, "0") if local else contextlib.nullcontext():
        yield


def start(address: str | None, *, verbose: bool = False) -> None:
    """ray.init for the sweep: local on 127.0.0.1 without the dashboard, or connect to a cluster."""
    import ray

    common = dict(include_dashboard=False, log_to_driver=verbose, configure_logging=True,
                  logging_level="info" if verbose else "warning",
                  runtime_env={"env_vars": worker_env()})
    if resolve_address(address) is not None:
        ray.init(address=address, **common)
        return
    from ray._private import ray_constants  # the constant Ray itself consults
    if ray_constants.ENABLE_RAY_CLUSTER:
        raise LoopbackError(f"a local Ray would listen on every interface: {LOOPBACK_SWITCH}=0 "
                            f"must be set before ray is imported (orchestrator.driver.local_ray."
                            f"prefer_loopback)")
    ray.init(address=None, _node_ip_address=LOOPBACK, dashboard_host=LOOPBACK, **common)
