"""Preflight checks for running a sweep on a Ray cluster: fail in seconds with one clear message
instead of hanging or losing work.

- ``check_address(address)`` before ``ray.init``: a cluster address that does not answer makes
  ``ray.init`` retry for minutes; a TCP connect with a short timeout says so at once.
- ``check_storage_shared(storage)`` after ``ray.init``: Tune storage must be the SAME place for
  every node (S3, NFS), or checkpoints die with the node that wrote them and a trial retried
  elsewhere restarts from scratch. The driver writes a probe; a zero-CPU task on every alive
  node must read it back and write its own answer, which the driver must then see.
- ``wait_for_gpus`` / ``wait_for_fitting_node`` after ``ray.init``: some node must hold one
  trial's GPUs and CPUs (an autoscaler is asked for one), or every trial would pend for ever.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

ADDRESS_TIMEOUT_S = 5.0
STORAGE_TIMEOUT_S = 60.0
DEFAULT_PORTS = {"ray": 10001, "http": 8265, "https": 443, "": 6379}
NO_CHECK = ("", "local", "auto")


class ClusterError(RuntimeError):
    """The cluster cannot run this sweep; the message names the culprit and the fix."""


def resolve_address(address: str | None) -> str | None:
    """The address ray.init will use: the option, else $RAY_ADDRESS (set inside Ray jobs)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def parse_address(address: str) -> tuple[str, int] | None:
    """host:port to probe for 'host:port', 'ray://host:port', 'http(s)://host:port';
    None for 'local'/'auto' (nothing remote to probe)."""
    if address.strip().lower() in NO_CHECK:
        return None
    scheme = address.split("://", 1)[0].lower() if "://" in address else ""
    parts = urlsplit(address if scheme else f"//{address}")
    if not parts.hostname:
        raise ClusterError(f"Ray cluster address {address!r} has no host; expected host:port, "
                           f"ray://host:port or http://host:port")
    if scheme not in DEFAULT_PORTS:
        raise ClusterError(f"Ray cluster address {address!r}: unknown scheme {scheme!r}; "
                           f"allowed: host:port, ray://, http://, https://")
    return parts.hostname, parts.port or DEFAULT_PORTS[scheme]


def check_address(address: str | None, timeout_s: float = ADDRESS_TIMEOUT_S) -> None:
    """Raise ClusterError unless the cluster address (option or $RAY_ADDRESS) accepts a TCP
    connection within timeout_s. No address (a local Ray) passes."""
    resolved = resolve_address(address)
    target = parse_address(resolved) if resolved else None
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as err:
        source = "--address" if address else "$RAY_ADDRESS"
        raise ClusterError(
            f"Ray cluster address {resolved!r} ({source}) does not answer: TCP connect to "
            f"{host}:{port} failed within {timeout_s:g}s ({err or type(err).__name__}). Is the "
            f"cluster up? Check with `ray status --address {host}:{port}` (or start it with "
            f"`ray up cluster.yaml`). Nothing was started.") from None


@dataclass(frozen=True)
class ProbeAnswer:
    """What one node saw of the storage."""

    node_id: str
    node_ip: str
    error: str | None
    """None when the node read the driver's probe and wrote its own answer."""


def _filesystem(storage: str):
    """(pyarrow filesystem, path) for a local path or a URI, as Tune resolves storage_path."""
    import pyarrow.fs
    if "://" in storage:
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(os.path.expanduser(storage))


def _probe_on_node(storage: str, probe_dir: str, token: str, node_id: str, node_ip: str) -> ProbeAnswer:
    """Runs ON a node: read the driver's token, then write this node's answer next to it."""
    try:
        fs, _ = _filesystem(storage)
        with fs.open_input_stream(f"{probe_dir}/driver") as f:
            seen = f.read().decode()
        if seen != token:
            return ProbeAnswer(node_id, node_ip, f"found a different probe ({seen!r} != {token!r})")
        with fs.open_output_stream(f"{probe_dir}/{node_id}") as f:
            f.write(token.encode())
        return ProbeAnswer(node_id, node_ip, None)
    except Exception as err:  # missing file, no credentials, no network: all mean "unreachable"
        return ProbeAnswer(node_id, node_ip, f"{type(err).__name__}: {err}")


def check_storage_shared(storage: str, timeout_s: float = STORAGE_TIMEOUT_S) -> None:
    """Raise ClusterError unless every alive node of the connected Ray cluster reads and writes
    the same Tune storage as the driver. Call after ray.init; a one-node cluster passes."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    fs, root = _filesystem(storage)
    probe_dir = f"{root.rstrip('/')}/.storage-probe-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex
    fs.create_dir(probe_dir, recursive=True)
    try:
        with fs.open_output_stream(f"{probe_dir}/driver") as f:
            f.write(token.encode())
        probe = ray.remote(num_cpus=0, max_retries=0)(_probe_on_node)
        pending = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                   .remote(storage, probe_dir, token, n["NodeID"], n["NodeManagerAddress"]): n for n in nodes}
        done, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
        answers = ray.get(done)
        bad = [f"node {a.node_id[:12]} ({a.node_ip}): {a.error}" for a in answers if a.error]
        bad += [f"node {pending[r]['NodeID'][:12]} ({pending[r]['NodeManagerAddress']}): no answer "
                f"within {timeout_s:g}s" for r in late]
        for a in answers:  # the driver must see what the nodes wrote, too
            if not a.error and fs.get_file_info(f"{probe_dir}/{a.node_id}").type.name != "File":
                bad.append(f"node {a.node_id[:12]} ({a.node_ip}): wrote its answer where the driver cannot see it")
    finally:
        fs.delete_dir(probe_dir)
    if bad:
        raise ClusterError(
            f"Tune storage {storage!r} is not shared by every node of the Ray cluster:\n  "
            + "\n  ".join(bad) + "\nCheckpoints written there would die with their node. Use a "
            "path every node mounts at the same place (NFS) or a cloud URI such as "
            "s3://bucket/path that every node can write. Nothing was trained.")


def wait_for_gpus(gpus_per_trial: float, timeout_s: float = 900.0, poll_s: float = 5.0) -> float:
    """GPU workers of an autoscaling cluster (cluster.yaml: min_workers 0) start only when
    something asks for GPUs, so "the cluster has 0 GPUs" at sweep start is normal there. Ask the
    autoscaler for one trial's GPUs (request_resources) and wait until they have joined; raise
    ClusterError after timeout_s instead of letting trials pend forever. Returns the GPU count.
    Call after ray.init."""
    import ray
    from ray.autoscaler.sdk import request_resources

    have = ray.cluster_resources().get("GPU", 0)
    if gpus_per_trial <= 0 or have >= gpus_per_trial:
        return have
    deadline = time.monotonic() + timeout_s
    request_resources(bundles=[{"GPU": gpus_per_trial}])
    try:
        while have < gpus_per_trial:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"--gpus-per-trial {gpus_per_trial:g}, but no GPU joined the Ray cluster within "
                    f"{timeout_s:g}s of asking the autoscaler for one (it has {have:g}). Check "
                    f"`ray status` and the autoscaler log (`ray monitor cluster.yaml`): GPU quota, "
                    f"spot capacity, instance types. Nothing was trained.")
            time.sleep(poll_s)
            have = ray.cluster_resources().get("GPU", 0)
    finally:
        request_resources(bundles=[])  # the trials' own demand keeps the workers from here on
    return have


def node_fits(node: dict, cpus_per_trial: float, gpus_per_trial: float) -> bool:
    """Whether one alive node of ``ray.nodes()`` can hold one trial (Ray places a trial's
    CPUs and GPUs together on a single node)."""
    have = node.get("Resources") or {}
    return bool(node.get("Alive")) and have.get("CPU", 0) >= cpus_per_trial \
        and have.get("GPU", 0) >= gpus_per_trial


def wait_for_fitting_node(cpus_per_trial: float, gpus_per_trial: float,
                          timeout_s: float = 900.0, poll_s: float = 5.0) -> None:
    """Some node must hold one trial's CPUs and GPUs, or every trial pends for ever (Ray only
    warns once a minute). An autoscaler may still add such a node: ask it for one trial's
    bundle (request_resources) and wait; raise ClusterError naming the largest node after
    timeout_s. Call after ray.init (and wait_for_gpus)."""
    import ray
    from ray.autoscaler.sdk import request_resources

    if any(node_fits(n, cpus_per_trial, gpus_per_trial) for n in ray.nodes()):
        return
    bundle = {"CPU": cpus_per_trial, **({"GPU": gpus_per_trial} if gpus_per_trial else {})}
    deadline = time.monotonic() + timeout_s
    request_resources(bundles=[bundle])
    try:
        while not any(node_fits(n, cpus_per_trial, gpus_per_trial) for n in ray.nodes()):
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"one trial needs {cpus_per_trial:g} CPUs and {gpus_per_trial:g} GPUs on one "
                    f"node, but no node of the Ray cluster has them ({_largest(ray.nodes())}) and "
                    f"none joined within {timeout_s:g}s of asking the autoscaler; lower "
                    f"--cpus-per-trial / --gpus-per-trial or add larger nodes. Nothing was trained.")
            time.sleep(poll_s)
    finally:
        request_resources(bundles=[])


def _largest(nodes: list[dict]) -> str:
    """'largest node: C CPUs, G GPUs' among the alive nodes, for the error message."""
    alive = [n.get("Resources") or {} for n in nodes if n.get("Alive")]
    if not alive:
        return "no alive node"
    top = max(alive, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)))
    return f"largest node: {top.get('CPU', 0):g} CPUs, {top.get('GPU', 0):g} GPUs"


def check_cluster_config(path: str) -> dict:
    """Validate a Ray cluster launcher YAML offline, as `ray up` would before touching the cloud:
    Ray's own defaults merge (prepare_config) and schema + consistency checks (validate_config).
    Returns the prepared config; raises ClusterError naming the file, the key and the problem."""
    import jsonschema
    import yaml

    # Private API on purpose: the public ray.autoscaler.sdk.fillout_defaults neither prepares a
    # "local" provider config (cluster.local.yaml) nor validates; these two are what `ray up`
    # itself runs, so the check agrees with it exactly.
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise ClusterError(f"{path}: cannot read cluster config: {err}") from None
    if not isinstance(config, dict) or "provider" not in config:
        raise ClusterError(f"{path}: not a Ray cluster config (no top-level 'provider' mapping)")
    try:
        prepared = prepare_config(config)
        validate_config(prepared)
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        raise ClusterError(f"{path}: {where}: {err.message}") from None
    except (ValueError, KeyError, RuntimeError, SystemExit) as err:
        raise ClusterError(f"{path}: {err}") from None
    return prepared


if __name__ == "__main__":  # python -m orchestrator.driver.cluster cluster.yaml [...]: check before `ray up`
    import sys
    for config_path in sys.argv[1:]:
        try:
            check_cluster_config(config_path)
        except ClusterError as error:
            sys.exit(f"cluster: error: {error}")
        print(f"{config_path}: valid Ray cluster config")
