"""Fault and placement flows on a head + 2 workers started with plain `ray start` on loopback:

P. placement: the workers advertise fake GPUs of two types (127.0.0.2 one "A10G", 127.0.0.4 one
   "A100-80G", as `accelerator_type:<GPU>` resources), described by a cluster config's node
   types; a sweep of real-size cells (fake trainable: nothing is built) with --gpus-per-trial
   auto must run every trial on the node advertising the GPU its placement asked for.
A. storage the workers cannot reach: a third worker whose view of the shared directory is an
   empty tmpfs (its own mount namespace); orchestrator.driver.cluster.check_storage_shared must name it.
B. node loss: a 4-trial sweep (the project's CLI, 4 epochs per trial) runs against the cluster;
   as soon as a trial on worker 127.0.0.2 has checkpointed an epoch, that worker's raylet is
   SIGKILLed. The sweep must still finish every trial, the interrupted ones resuming from their
   last checkpoint on 127.0.0.4.

Writes what it saw as JSON for test_node_loss.py to judge.

    python tests/cluster/flow_node_loss.py WORKDIR OUT.json [--storage-phase]

(P adds ~30 s; it runs before B on the same workers: B's trials ask for no GPU.)

Phase A needs mount namespaces (root with CAP_SYS_ADMIN); the test asks for it only then.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from loopback import REPO, VENV_BIN, PlainCluster, env, log, write_json

VICTIM, SURVIVOR, UNSHARED = "127.0.0.2", "127.0.0.4", "127.0.0.5"
EPOCHS = 4
SPACE_YAML = """\
methods: [{method: qformer_lora, sublayers: [all]}, {method: llm_lora, sublayers: [attn]}]
ranks: [1, 2]
llms: [flan-t5-xl]
benchmarks: [iconqa]
max_train_examples: 320
max_eval_examples: 48
"""


PLACEMENT_SPACE = """\
methods: [baseline, {method: qformer_lora, sublayers: [all]}]
ranks: [1]
llms: [flan-t5-xl, vicuna-7b]
benchmarks: [iconqa]
epochs: 2
"""
GPU_OF = {VICTIM: "A10G", SURVIVOR: "A100-80G"}
PLACEMENT_CLUSTER = f"""\
cluster_name: loopback-placement
provider: {{type: local, head_ip: 127.0.0.3, worker_ips: [{VICTIM}, {SURVIVOR}]}}
metadata:
  instructblip_peft:
    node_types:
      small: {{gpu: {GPU_OF[VICTIM]}, gpus: 1, cpus: 1, nodes: 1, usd_per_hour: 1.0}}
      big: {{gpu: {GPU_OF[SURVIVOR]}, gpus: 1, cpus: 1, nodes: 1, usd_per_hour: 4.0}}
"""


def placement_phase(cluster: PlainCluster, shared: Path) -> dict:
    """P: real-size cells placed by their planned memory on the fake GPU types."""
    held = Path(os.environ["FAKE_TRIAL_PLACEMENT_DIR"])  # what each trial says Ray gave it
    (shared / "placement_space.yaml").write_text(PLACEMENT_SPACE)
    (shared / "placement_cluster.yaml").write_text(PLACEMENT_CLUSTER)
    sweep = [str(VENV_BIN / "python"), "-m", "orchestrator.sweep", "--space",
             str(shared / "placement_space.yaml"), "--name", "sweep-placement",
             "--llm", "flan-t5-xl=flan-t5-xl", "--llm", "vicuna-7b=vicuna-7b",
             "--random-weights",  # the fake trainable loads nothing: no HF-cache preflight
             "--trainable", "tests.orchestrator.fake_trainable:fake_trial",
             "--cluster-config", str(shared / "placement_cluster.yaml"),
             "--address", cluster.address, "--storage", str(shared / "ray_results"),
             "--tracking-uri", f"sqlite:///{shared / 'mlflow.db'}", "--cache-dir",
             str(shared / "prepared"), "--scheduler", "fifo", "--no-retune"]
    proc = subprocess.run(sweep, cwd=shared, env=env(), capture_output=True, text=True, timeout=240)
    seen: dict = {"placement_rc": proc.returncode, "gpu_of": GPU_OF,
                  "placement_log": (proc.stdout + proc.stderr)[-6000:]}
    trials: dict[str, dict] = {}
    for path in sorted((shared / "ray_results" / "sweep-placement").glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        trials[path.parent.name] = {"node_ips": sorted({r["node_ip"] for r in rows})}  # Tune's view
    seen["placement_trials"] = trials
    seen["placement_held"] = [json.loads(p.read_text()) for p in sorted(held.glob("*.json"))]
    seen["placement_runs"] = mlflow_placement_runs(shared / "mlflow.db")
    return seen


def mlflow_placement_runs(db: Path) -> list[dict]:
    """The placement sweep's child runs: cell, node type tag and cost metrics."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("sweep-placement")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], "tags.`sweep.role` = 'trial'")
    keys = ("gpu_share", "gpu_seconds", "wall_time_s", "cost_usd")
    return [{"cell": r.data.tags.get("cell_id"), "node_type": r.data.tags.get("node_type"),
             **{k: r.data.metrics.get(k) for k in keys}} for r in runs]


def storage_phase(cluster: PlainCluster, shared: Path) -> dict:
    """A: a node that sees another filesystem at the storage path must be named, then removed."""
    import ray

    from orchestrator.driver.cluster import ClusterError, check_storage_shared
    cluster.add_worker(UNSHARED, 6900, num_cpus=0, hide=shared)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="warning")
    try:
        check_storage_shared(str(shared / "ray_results"), timeout_s=60)
        error = None
    except ClusterError as err:
        error = str(err)
    finally:
        ray.shutdown()
    cluster.kill_node(UNSHARED)
    cluster.wait_dead(UNSHARED, timeout=60)
    return {"storage_error": error}


def results(experiment: Path) -> dict[str, list[dict]]:
    """trial dir -> its result rows (epoch, node_ip, test_acc) as Tune persisted them."""
    out = {}
    for path in sorted(experiment.glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[path.parent.name] = [{"epoch": r.get("epoch"), "node_ip": r.get("node_ip"),
                                  "test_acc": r.get("test_acc")} for r in rows]
    return out


def first_checkpointed_victim(experiment: Path) -> str | None:
    """A trial that reported (and checkpointed) an epoch on the victim and is not done yet."""
    for trial, rows in results(experiment).items():
        if rows and rows[-1]["node_ip"] == VICTIM and rows[-1]["test_acc"] is None:
            return trial
    return None


def node_loss_phase(cluster: PlainCluster, shared: Path, timeout: float) -> dict:
    """B: the smoke sweep survives losing a worker mid-trial."""
    # The smoke space's trials (48 problems, a fraction of a second per epoch) can finish before
    # the kill lands; the same four kinds of trial on 320 problems take seconds per epoch.
    space = shared / "node_loss_space.yaml"
    space.write_text(SPACE_YAML)
    sweep = [str(VENV_BIN / "python"), "-m", "orchestrator.sweep", "--space", str(space),
             "--name", "sweep-smoke",
             "--address", cluster.address, "--storage", str(shared / "ray_results"),
             "--tracking-uri", f"sqlite:///{shared / 'mlflow.db'}", "--cache-dir", str(shared / "prepared"),
             "--epochs", str(EPOCHS), "--scheduler", "fifo", "--no-retune", "--max-failures", "2"]
    experiment = shared / "ray_results" / "sweep-smoke"
    seen: dict = {}
    with open(shared / "sweep.log", "w") as logfile:
        proc = subprocess.Popen(sweep, cwd=shared, env=env(), stdout=logfile, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while (victim := first_checkpointed_victim(experiment)) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("no trial checkpointed on the victim node before the sweep ended")
                time.sleep(0.5)
            seen["victim_trial"], seen["rows_before_kill"] = victim, results(experiment)
            cluster.kill_node(VICTIM)
            log(f"killed node {VICTIM} while {victim} was running on it")
            seen["sweep_rc"] = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
    seen["sweep_log"] = (shared / "sweep.log").read_text()[-6000:]
    seen["rows"] = results(experiment)
    seen["mlflow_trial_runs"] = mlflow_trial_runs(shared / "mlflow.db")
    return seen


def mlflow_trial_runs(db: Path) -> list[dict]:
    """Every child (trial) run of the sweep with its trial id, status and val_acc steps."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("sweep-smoke")
    runs = client.search_runs([experiment.experiment_id], "tags.`sweep.role` = 'trial'", max_results=1000)
    return [{"trial_id": r.data.tags.get("sweep.trial_id"), "status": r.data.tags.get("status"),
             "val_acc_steps": sorted(m.step for m in client.get_metric_history(r.info.run_id, "val_acc"))}
            for r in runs]


def main(workdir: Path, out: Path, with_storage_phase: bool) -> None:
    shared = workdir / "shared"  # one host: a directory every node can reach
    # Workers import the fake trainable (tests/) by name: the checkout must be on their path; the
    # fake records where Ray ran it (phase P) in a directory the workers inherit from here.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    (shared / "placement_held").mkdir(parents=True, exist_ok=True)
    os.environ["FAKE_TRIAL_PLACEMENT_DIR"] = str(shared / "placement_held")
    shared.mkdir(parents=True, exist_ok=True)
    cluster = PlainCluster()
    seen: dict = {}
    try:
        started = time.monotonic()
        cluster.start_head(num_cpus=0)  # the driver's node; trials run on the workers
        for ip, port in ((VICTIM, 6700), (SURVIVOR, 6800)):  # fake GPUs, for phase P
            cluster.add_worker(ip, port, num_gpus=1, resources={f"accelerator_type:{GPU_OF[ip]}": 1})
        seen["start_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        seen.update(placement_phase(cluster, shared))
        seen["placement_s"] = round(time.monotonic() - started, 1)
        if with_storage_phase:
            seen.update(storage_phase(cluster, shared))
        started = time.monotonic()
        seen.update(node_loss_phase(cluster, shared, timeout=240))
        seen["sweep_s"] = round(time.monotonic() - started, 1)
    finally:
        cluster.stop()
        write_json(out, seen)
        log(f"flow done: {json.dumps({k: v for k, v in seen.items() if k.endswith('_s')})}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), "--storage-phase" in sys.argv[3:])
