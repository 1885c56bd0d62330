"""A real MLflow tracking server for integration tests, and a smoke sweep run against it.

The server binds 127.0.0.1 on a free port with its own sqlite store and artifact directory,
and is always terminated (its whole process group: uvicorn starts workers).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FAKE_TRAINABLE = "tests.orchestrator.fake_trainable:fake_trial"
SMOKE_CELLS = ("synth-scienceqa|tiny-t5|qformer_lora/all|r1",
               "synth-scienceqa|tiny-llama|llm_lora/attn|r2",
               "synth-iconqa|tiny-t5|both_lora/all|r2",
               "synth-iconqa|tiny-llama|baseline/none|r0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest(base: str, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One MLflow REST call (POST with a JSON body, or GET)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{endpoint}", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


@contextmanager
def mlflow_server(workdir: Path, startup_timeout_s: float = 180,
                  port: int | None = None) -> Iterator[str]:
    """Start ``mlflow server`` and yield its URL once /health answers (``port``: a given one,
    e.g. to restart a stopped server where its clients expect it)."""
    port = port or free_port()
    log_path = workdir / "mlflow_server.log"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{workdir}/db.sqlite",
           "--artifacts-destination", str(workdir / "artifacts")]
    with log_path.open("a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}):\n"
                                   f"{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {startup_timeout_s} s:\n"
                                   f"{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this function started, nothing else
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_smoke_sweep(url: str, workdir: Path, name: str,
                    extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python -m orchestrator.sweep --space smoke`` against the server, fast fake trainable."""
    cmd = [sys.executable, "-m", "orchestrator.sweep", "--space", "smoke", "--name", name,
           "--tracking-uri", url, "--storage", str(workdir / "ray_results"),
           "--report-dir", str(workdir / "report"), "--trainable", FAKE_TRAINABLE,
           "--scheduler", "fifo", "--max-concurrent", "2", *extra]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
