"""The user's on-prem flow, for real, on this host: sshd on loopback, `ray up -y
cluster.local.yaml` (head 127.0.0.3 + worker 127.0.0.2), `ray exec ... ray status`, the smoke
sweep started with `ray job submit`, `ray down -y`. Writes what it saw as JSON for
test_ray_up.py to judge; run by that test inside its own namespaces (see loopback.py).

    python tests/cluster/flow_ray_up.py WORKDIR OUT.json
"""
from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import yaml
from loopback import REPO, VENV_BIN, Sshd, log, run, write_json

HEAD, WORKER = "127.0.0.3", "127.0.0.2"
DASHBOARD = f"http://{HEAD}:8275"
RAY = str(VENV_BIN / "ray")
SHIPPED_PROJECT_DIR = "/opt/instructblip-peft"


def render_config(workdir: Path, key: Path) -> Path:
    """cluster.local.yaml with what a user edits for their machines: the SSH key, and the
    checkout path (this clone instead of /opt/instructblip-peft)."""
    config = yaml.safe_load((REPO / "cluster.local.yaml").read_text())
    config["auth"]["ssh_private_key"] = str(key)
    text = json.dumps(config).replace(SHIPPED_PROJECT_DIR, str(REPO))
    path = workdir / "cluster.local.yaml"
    path.write_text(yaml.safe_dump(json.loads(text), sort_keys=False))
    return path


def active_nodes(status: str) -> int:
    """Node count of `ray status`'s "Active:" block (lines like " 2 local.cluster.node")."""
    if "Active:" not in status:
        return 0
    block = status.split("Active:")[1].split("Pending:")[0]
    return sum(int(line.split()[0]) for line in block.splitlines() if line.strip()[:1].isdigit())


def wait_for_nodes(config: Path, want: int, timeout: float) -> str:
    """Poll `ray exec CONFIG 'ray status'` on the head until `want` nodes are active."""
    deadline = time.monotonic() + timeout
    while True:
        status = run([RAY, "exec", str(config), "ray status"],
                     timeout=120, check=False).stdout
        if active_nodes(status) >= want:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"cluster did not reach {want} active nodes in {timeout}s:\n{status}")
        time.sleep(3)


def submit_smoke_sweep(workdir: Path) -> tuple[int, str]:
    """The smoke sweep as a Ray job. The code is the checkout every node has (installed in
    its venv, so trials import it from the same path); the job runs in the shared directory,
    where its outputs (reports/) land."""
    shared = workdir / "shared"  # one host: a plain directory every node can reach
    shared.mkdir(parents=True, exist_ok=True)
    sweep = [str(VENV_BIN / "python"), "-m", "orchestrator.sweep", "--space", "smoke",
             "--storage", str(shared / "ray_results"), "--tracking-uri", f"sqlite:///{shared / 'mlflow.db'}",
             "--cache-dir", str(shared / "prepared"), "--epochs", "1", "--scheduler", "fifo", "--no-retune"]
    cmd = [RAY, "job", "submit", "--address", DASHBOARD, "--", "bash", "-c",
           f"cd {shlex.quote(str(shared))} && {shlex.join(sweep)}"]
    for _ in range(10):  # the head's job agent comes up some seconds after `ray up` returns
        job = run(cmd, timeout=240, check=False)
        if "No available agent" not in job.stderr:
            break
        time.sleep(3)
    return job.returncode, job.stdout + job.stderr


def trial_results(storage: Path) -> dict[str, dict]:
    """trial directory -> its last result's node_ip (Tune adds it to every result) and test_acc
    (the trial's final report)."""
    out = {}
    for result in sorted(storage.glob("*/*/result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows:
            out[result.parent.name] = {"node_ip": rows[-1]["node_ip"], "test_acc": rows[-1].get("test_acc")}
    return out


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def login_bashrc() -> tuple[Path, bytes | None]:
    """The ~/.bashrc SSH sessions source (passwd home, not $HOME), with its current content:
    cluster.local.yaml's setup puts the venv on PATH there; we put it back afterwards."""
    path = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".bashrc"
    return path, path.read_bytes() if path.exists() else None


def launcher_debris() -> set[Path]:
    """What the launcher leaves on the machines: its config cache and SSH control sockets (in
    the system temp dir) and the head's bootstrap key + config (in the SSH user's home)."""
    tmp, home = Path(tempfile.gettempdir()), Path(pwd.getpwuid(os.getuid()).pw_dir)
    return {*tmp.glob("ray-config-*"), *tmp.glob("ray_ssh_*"), *home.glob("ray_bootstrap_*")}


def main(workdir: Path, out: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    seen: dict = {}
    bashrc, bashrc_before = login_bashrc()
    debris_before = launcher_debris()
    sshd = Sshd(workdir / "ssh", [HEAD, WORKER]).start()
    config = render_config(workdir, sshd.client_key)
    try:
        started = time.monotonic()
        run([RAY, "up", "-y", "--no-config-cache", str(config)], timeout=240)
        seen["status"] = wait_for_nodes(config, 2, timeout=120)
        seen["ray_up_s"] = round(time.monotonic() - started, 1)
        nodes = json.loads(run([RAY, "list", "nodes", "--address", DASHBOARD, "--format", "json"],
                               timeout=60).stdout)
        seen["nodes"] = {n["node_ip"]: n["node_id"] for n in nodes if n["state"] == "ALIVE"}
        started = time.monotonic()
        seen["job_rc"], output = submit_smoke_sweep(workdir)
        seen["job_output"] = output[-6000:]
        seen["sweep_s"] = round(time.monotonic() - started, 1)
        seen["trials"] = trial_results(workdir / "shared" / "ray_results")
    finally:
        down = run([RAY, "down", "-y", str(config)], timeout=120, check=False)
        seen["down_rc"] = down.returncode
        seen["head_port_open_after_down"] = port_open(HEAD, 6390)
        sshd.stop()
        for path in launcher_debris() - debris_before:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if bashrc_before is None:
            bashrc.unlink(missing_ok=True)
        else:
            bashrc.write_bytes(bashrc_before)
        write_json(out, seen)
        log(f"flow done: {json.dumps({k: v for k, v in seen.items() if k.endswith('_s')})}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
