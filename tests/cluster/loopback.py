"""Multi-node Ray on one host, for the cluster integration tests: sshd and Ray nodes on
loopback aliases (127.0.0.2, 127.0.0.3, ... are all loopback; 127.0.0.1 itself Ray rewrites to
the host's address), each node with its own ports.

`ray stop` and `ray down` stop every Ray process they can see. So the flows run, when the
kernel lets us (root with CAP_SYS_ADMIN), inside their own PID + mount namespace
(`isolated_command`): there `ray stop` sees only the flow's processes, /tmp/ray is private (no
other Ray on the host finds this cluster through /tmp/ray/ray_current_cluster), and when the
flow's first process exits the kernel kills everything it started, whatever went wrong.
Without namespaces the flow runs directly and owns the machine's Ray (CI runs tests one by one).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SSHD = "/usr/sbin/sshd"

# Every process of the test cluster sees the same settings (each SSH session is a fresh env).
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_UP_enable_autoscaler_v2": "0", "TOKENIZERS_PARALLELISM": "false"}


def env(**extra: str) -> dict[str, str]:
    """This process's environment + the cluster settings + the venv first on PATH."""
    out = {**os.environ, **RAY_ENV, **extra}
    out["PATH"] = f"{VENV_BIN}:{out.get('PATH', '/usr/bin:/bin')}"
    out.pop("RAY_ADDRESS", None)
    return out


def missing_tools() -> list[str]:
    """What the flows need from the OS (.ci/run installs them: openssh-server, rsync)."""
    need = [SSHD, "ssh", "ssh-keygen", "rsync"]
    return [t for t in need if not (Path(t).exists() if t.startswith("/") else shutil.which(t))]


def can_isolate() -> bool:
    """True when `unshare` may make PID + mount namespaces here (root with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def isolated_command(argv: list[str], private_tmp_ray: Path) -> list[str]:
    """argv wrapped in fresh PID + mount namespaces with a private /tmp/ray (see can_isolate).
    --kill-child: if the timeout kills `unshare`, the namespace's first process dies, and the
    kernel kills every other process in it."""
    private_tmp_ray.mkdir(parents=True, exist_ok=True)
    Path("/tmp/ray").mkdir(exist_ok=True)  # the mount point; Ray creates it anyway
    script = f'mount --bind "{private_tmp_ray}" /tmp/ray && exec "$@"'
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private",
            "bash", "-c", script, "isolated", *argv]


def run_flow(flow: Path, workdir: Path, out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Run a flow script (isolated when possible) with a hard timeout. Without namespaces the
    kernel reaps nothing for us, so afterwards stop every Ray process and the flow's sshd."""
    argv = [sys.executable, str(flow), str(workdir), str(out), *args]
    isolated = can_isolate()
    try:
        return subprocess.run(isolated_command(argv, workdir.parent / "tmp_ray") if isolated else argv,
                              cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    finally:
        if not isolated:
            subprocess.run([str(VENV_BIN / "ray"), "stop", "--force"], env=env(), capture_output=True, timeout=120)
            pidfile = workdir / "ssh" / "sshd.pid"
            if pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)


def run(argv: list[str], timeout: float, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command with a hard timeout; on failure, raise with its full output."""
    kw.setdefault("env", env())
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else err.stdout or ""
        raise TimeoutError(f"command timed out after {timeout}s: {' '.join(argv)}\n"
                           f"--- output so far ---\n{out[-6000:]}") from None
    took = time.monotonic() - started
    log(f"$ {' '.join(argv)[:200]}  -> rc {proc.returncode} in {took:.1f}s")
    if check and proc.returncode != 0:
        raise RuntimeError(f"command failed (rc {proc.returncode}): {' '.join(argv)}\n"
                           f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_port(host: str, port: int, timeout: float) -> None:
    """Block until host:port accepts TCP connections."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} did not accept connections within {timeout}s") from None
            time.sleep(0.2)


@dataclass
class Sshd:
    """An sshd for root, on loopback addresses only, key login only, config in a temp dir."""

    workdir: Path
    addresses: list[str]
    port: int = 22
    proc: subprocess.Popen | None = None
    client_key: Path = field(init=False)

    def __post_init__(self) -> None:
        self.client_key = self.workdir / "id_ed25519"

    def start(self, timeout: float = 20) -> Sshd:
        for a in self.addresses:
            try:
                with socket.create_connection((a, self.port), timeout=2):
                    raise RuntimeError(f"{a}:{self.port} is already taken (a system sshd on "
                                       f"0.0.0.0:{self.port}?); the test needs it for its own sshd")
            except OSError:
                pass
        self.workdir.mkdir(parents=True, exist_ok=True)
        host_key = self.workdir / "ssh_host_ed25519_key"
        for key in (host_key, self.client_key):
            if not key.exists():
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], timeout=30)
        authorized = self.workdir / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        config = self.workdir / "sshd_config"
        config.write_text("\n".join([
            *(f"ListenAddress {a}:{self.port}" for a in self.addresses),
            f"HostKey {host_key}", f"AuthorizedKeysFile {authorized}", f"PidFile {self.workdir / 'sshd.pid'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "MaxStartups 100",
            "MaxSessions 100", "LogLevel ERROR",
            # Every session (ray up's, the head autoscaler's) sees the cluster's Ray settings.
            "SetEnv " + " ".join(f"{k}={v}" for k, v in RAY_ENV.items()), "",
        ]))
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        run([SSHD, "-t", "-f", str(config)], timeout=30)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                     stdout=open(self.workdir / "sshd.log", "w"), stderr=subprocess.STDOUT)
        for a in self.addresses:
            wait_port(a, self.port, timeout)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass(frozen=True)
class NodePorts:
    """The ports one Ray node binds; nodes on one host need disjoint sets."""

    base: int
    """node manager = base+1, object manager +2, agent listen +3, agent grpc +4, metrics +5,
    runtime-env agent +6; worker processes use base+100 .. base+299."""

    def flags(self) -> list[str]:
        b = self.base
        return [f"--node-manager-port={b + 1}", f"--object-manager-port={b + 2}",
                f"--dashboard-agent-listen-port={b + 3}", f"--dashboard-agent-grpc-port={b + 4}",
                f"--metrics-export-port={b + 5}", f"--runtime-env-agent-port={b + 6}",
                f"--min-worker-port={b + 100}", f"--max-worker-port={b + 299}"]


@dataclass
class PlainCluster:
    """Head + workers started with plain `ray start` on loopback (no SSH), for fault tests."""

    head_ip: str = "127.0.0.3"
    gcs_port: int = 6590
    dashboard_port: int = 8285
    object_store_bytes: int = 100_000_000
    workers: dict[str, NodePorts] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.gcs_port}"

    def start_head(self, num_cpus: int = 0) -> None:
        # A killed node is declared dead after ~3 s instead of Ray's default ~30 s.
        fast_health_checks = env(RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
                                 RAY_health_check_failure_threshold="3")
        run([str(VENV_BIN / "ray"), "start", "--head", f"--node-ip-address={self.head_ip}",
             f"--port={self.gcs_port}", *NodePorts(self.gcs_port + 1000).flags(),
             f"--ray-client-server-port={self.gcs_port + 2}", "--dashboard-host", self.head_ip,
             f"--dashboard-port={self.dashboard_port}", f"--num-cpus={num_cpus}",
             f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats"],
            timeout=120, env=fast_health_checks)

    def add_worker(self, ip: str, base_port: int, num_cpus: int = 1, hide: Path | None = None,
                   num_gpus: int = 0, resources: dict[str, float] | None = None) -> None:
        """Start a worker node; with `hide`, the node (its own mount namespace) sees an empty
        tmpfs at that directory: a node that cannot reach the storage the others share.
        `num_gpus` / `resources` make it advertise GPUs it does not have (Ray accounts them
        like real ones; trials that get them find no CUDA device and run on CPU)."""
        ports = NodePorts(base_port)
        argv = [str(VENV_BIN / "ray"), "start", f"--address={self.address}", f"--node-ip-address={ip}",
                *ports.flags(), f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
                f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats"]
        if resources:
            argv.append(f"--resources={json.dumps(resources)}")
        if hide is not None:
            argv = ["unshare", "--mount", "--propagation", "private", "bash", "-c",
                    f'mount -t tmpfs tmpfs "{hide}" && exec "$@"', "hide", *argv]
        run(argv, timeout=120)
        self.workers[ip] = ports

    def wait_dead(self, ip: str, timeout: float) -> None:
        """Block until the cluster has declared node `ip` dead (no live raylet under that IP)."""
        deadline = time.monotonic() + timeout
        while True:
            states = json.loads(run([str(VENV_BIN / "ray"), "list", "nodes", "--format", "json",
                                     "--address", f"http://{self.head_ip}:{self.dashboard_port}"],
                                    timeout=60).stdout)
            if not any(n["node_ip"] == ip and n["state"] == "ALIVE" for n in states):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {ip} still ALIVE {timeout}s after its raylet was killed")
            time.sleep(1)

    def raylet_pid(self, ip: str) -> int:
        """PID of the raylet serving node `ip` (found by its --node_ip_address argument)."""
        import psutil
        for p in psutil.process_iter(["name", "cmdline"]):
            cmd = p.info["cmdline"] or []
            if p.info["name"] == "raylet" and f"--node_ip_address={ip}" in cmd:
                return p.pid
        raise LookupError(f"no raylet for node {ip}")

    def kill_node(self, ip: str) -> None:
        """Lose node `ip` abruptly: SIGKILL its raylet (its workers die with it)."""
        os.kill(self.raylet_pid(ip), signal.SIGKILL)

    def stop(self) -> None:
        run([str(VENV_BIN / "ray"), "stop", "--force"], timeout=120, check=False)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
