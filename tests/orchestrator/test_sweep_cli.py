"""The sweep CLI: --help, and one clear error before Ray starts for every bad invocation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.driver.options import SweepOptions
from orchestrator.sweep import build_parser, main

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.orchestrator.fake_trainable:fake_trial"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One prepared-data cache for the module: checks that come after data preparation pay
    for preparing the smoke space's benchmarks once, not once per test."""
    return str(tmp_path_factory.mktemp("prepared"))


def fails(argv: list[str], capsys) -> str:
    """Run the CLI in-process; it must exit 2 with one 'sweep: error:' line, Ray not started."""
    import ray
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sweep: error: ")
    assert not ray.is_initialized()
    return err


def test_help_explains_every_option():
    text = build_parser().format_help()
    undocumented = [a.option_strings for a in build_parser()._actions if not (a.help or "").strip()]
    assert undocumented == []
    assert "tiny-t5" in text and "synth-scienceqa" in text  # the offline default is explained


def test_the_parser_takes_every_default_from_sweep_options():
    """Defaults are typed once (SweepOptions, trainables.defaults): parsing no option at all
    gives exactly SweepOptions' defaults, and the help shows them."""
    parsed = SweepOptions.from_namespace(build_parser().parse_args(["--space", "smoke"]), [])
    assert parsed == SweepOptions(space="smoke")
    text = " ".join(build_parser().format_help().split())
    assert f"(default {SweepOptions.storage};" in text and f"(default {SweepOptions.cache_dir})" in text


def test_unknown_space(capsys):
    assert "unknown space 'nope'" in fails(["--space", "nope"], capsys)


def test_bad_yaml_space_names_the_key(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("methods: [baseline]\nlearning_rate: 1e-4\n")
    assert "unknown key(s) learning_rate" in fails(["--space", str(path)], capsys)
    path.write_text("methods: [qformer_lora]\nranks: [-1]\n")
    assert "bad rank -1" in fails(["--space", str(path)], capsys)
    path.write_text("methods: [{method: qformer_lora, sublayers: [attn]}]\nranks: [1]\n")
    assert "sublayer 'attn' does not exist for qformer_lora" in fails(["--space", str(path)], capsys)
    path.write_text("methods: [qformer_lora]\nranks: [1]\nbenchmarks: []\n")
    assert "grid is empty" in fails(["--space", str(path)], capsys)


@pytest.mark.parametrize("extra,needle", [
    (["--resume", "--dry-run"], "--resume and --dry-run"),
    (["--scheduler", "fifo", "--grace-period", "2"], "--grace-period only applies to --scheduler asha"),
    (["--scheduler", "fifo", "--reduction-factor", "3"], "--reduction-factor only applies"),
    (["--plan-out", "p.json"], "--plan-out needs --dry-run"),
    (["--no-retune", "--retune-samples", "3"], "--retune-samples contradicts --no-retune"),
    (["--max-concurrent", "0"], "--max-concurrent must be >= 1"),
    (["--grace-period", "50"], "exceeds the epoch budget"),
    (["--llm", "flan-t5-xl=/no/such/model"], "neither a preset"),
    (["--no-vit-cache", "--vit-cache-dir", "x"], "contradict --no-vit-cache"),
    (["--vit-cache-max-gb", "0"], "--vit-cache-max-gb must be > 0"),
])
def test_conflicting_or_bad_options(extra, needle, capsys):
    assert needle in fails(["--space", "smoke", *extra], capsys)


def test_unwritable_vit_cache_dir_fails_before_storage_and_tracking(tmp_path, cache, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    err = fails(["--space", "smoke", "--vit-cache-dir", str(blocker / "sub"), "--cache-dir", cache,
                 "--storage", str(tmp_path / "rr"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], capsys)
    assert "ViT feature cache directory" in err and str(blocker / "sub") in err
    assert not (tmp_path / "rr").exists() and not (tmp_path / "mlflow.db").exists()


def test_unwritable_storage(tmp_path, cache, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    err = fails(["--space", "smoke", "--storage", str(blocker / "sub"),
                 "--cache-dir", cache,
                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], capsys)
    assert "is not writable" in err and str(blocker) in err


def test_gpus_per_trial_without_a_gpu(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    err = fails(["--space", "smoke", "--gpus-per-trial", "0.5", "--storage", str(tmp_path / "rr"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], capsys)
    assert "no CUDA GPU" in err


def test_a_real_preset_without_gpus_or_cpu_request_is_refused_before_ray(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    real = ["--space", "smoke", "--llm", "flan-t5-xl=flan-t5-xl", "--random-weights",
            "--storage", str(tmp_path / "rr"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    err = fails(real, capsys)  # --gpus-per-trial auto: this machine is the only node type
    assert "fit on no node type's GPU; no node type has a GPU" in err and "--cpu" in err
    err = fails([*real, "--gpus-per-trial", "0"], capsys)
    assert "flan-t5-xl would run on CPU with --gpus-per-trial 0" in err and "--cpu" in err
    assert not (tmp_path / "rr").exists() and not (tmp_path / "m.db").exists()  # nothing written
    assert "--cpu contradicts" in fails(["--space", "smoke", "--cpu", "--gpus-per-trial", "1"], capsys)


def test_a_cluster_address_that_does_not_answer_fails_in_seconds(tmp_path, capsys):
    import socket
    import time
    with socket.socket() as s:  # a bound but never listening port: connections are refused
        s.bind(("127.0.0.9", 0))
        port = s.getsockname()[1]
        started = time.monotonic()
        err = fails(["--space", "smoke", "--address", f"127.0.0.9:{port}",
                     "--storage", str(tmp_path / "rr"),
                     "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], capsys)
    assert time.monotonic() - started < 30
    assert f"127.0.0.9:{port}" in err and "(--address) does not answer" in err


def test_resume_without_a_sweep(tmp_path, cache, capsys):
    err = fails(["--space", "smoke", "--resume", "--storage", str(tmp_path / "rr"),
                 "--cache-dir", cache,
                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], capsys)
    assert "no sweep 'sweep-smoke'" in err and str(tmp_path / "rr") in err
    assert not (tmp_path / "m.db").exists()  # refused before the tracking store is touched


def test_a_sweep_that_exists_needs_resume(tmp_path, cache, capsys):
    experiment = tmp_path / "rr" / "sweep-smoke"
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(b"")  # what Tune checks for a restorable experiment
    err = fails(["--space", "smoke", "--storage", str(tmp_path / "rr"),
                 "--cache-dir", cache,
                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], capsys)
    assert "sweep 'sweep-smoke' already exists under" in err and "pass --resume" in err
    assert not (tmp_path / "m.db").exists()
    assert [p.name for p in experiment.iterdir()] == ["tuner.pkl"]  # the old sweep is untouched


def test_corrupt_data_fails_before_storage_cache_or_tracking_are_touched(tmp_path, capsys):
    """A data error in the second benchmark: exit 2 naming pid and field, and no storage dir,
    no cache dir (not even the first, valid benchmark's), no MLflow store or experiment."""
    import shutil
    data = tmp_path / "sqa"  # the shipped ScienceQA sample, pid 42's answer out of range
    shutil.copytree(REPO / "trainables" / "assets" / "data" / "scienceqa", data)
    for p in [data, *data.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    problems = json.loads((data / "problems.json").read_text())
    problems["42"]["answer"] = 5
    (data / "problems.json").write_text(json.dumps(problems))
    space = tmp_path / "two.yaml"  # the synth iconqa stand-in first: valid, prepared if anything is
    space.write_text("methods: [baseline]\nllms: [flan-t5-xl]\nbenchmarks: [iconqa, scienceqa]\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    err = fails(["--space", str(space), "--data-root", f"scienceqa={data}",
                 "--storage", str(tmp_path / "rr"), "--cache-dir", str(tmp_path / "cache"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], capsys)
    assert str(data / "problems.json") in err and "pid '42'" in err and "field 'answer'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before == ["sqa", "two.yaml"]


def test_dry_run_writes_the_plan_without_ray(tmp_path, capsys):
    import ray
    out = tmp_path / "plan.json"
    assert main(["--space", "baseline", "--dry-run", "--plan-out", str(out)]) == 0
    assert not ray.is_initialized()
    plan = json.loads(out.read_text())
    assert len(plan) == 4 and {p["llm"] for p in plan} == {"flan-t5-xl", "vicuna-7b"}
    assert "4 trials at real model sizes" in capsys.readouterr().out


def run_cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **env}
    return subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args,
                           "--storage", str(tmp_path / "rr"), "--cache-dir", str(tmp_path / "cache"),
                           "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--trainable", FAKE,
                           "--report-dir", str(tmp_path / "report"),
                           # pinned: which trials ASHA stops when depends on how many run at once
                           "--max-concurrent", "2"],
                          cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)


@pytest.mark.integration
def test_sweep_runs_grid_retunes_the_divergent_cell_and_summarises(tmp_path):
    space = tmp_path / "mini.yaml"
    space.write_text("methods: [baseline, {method: qformer_lora, sublayers: [ffn]}]\n"
                     "ranks: [1, 2, 4]\nllms: [flan-t5-xl]\nbenchmarks: [scienceqa, iconqa]\n"
                     "epochs: 3\n")
    # --grace-period 2: one rung inside the 3-epoch budget, so ASHA stops trials here and their
    # savings are counted (pinned: the tiny default's rungs may move with the recipe).
    proc = run_cli(["--space", str(space), "--retune-samples", "3", "--seed", "1",
                    "--price", "local=0.4", "--grace-period", "2"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    print(out[out.index("sweep summary"):])
    assert "8 cells:" in out and "0 failed" in out
    # The fake's planted divergent cell (qformer_lora/ffn r4) is retuned in both groups.
    assert "2 retuned (*)" in out
    # The ASHA rung is at epoch 2, after the planted cell reports diverged: the divergence rule
    # retunes it.
    assert "synth-scienceqa|tiny-t5|qformer_lora/ffn|r4: trial reported diverged" in out
    assert "synth-iconqa|tiny-t5|qformer_lora/ffn|r4: trial reported diverged" in out
    assert "3 lrs tried; best lr" in out
    assert "*" in out.split("best validation accuracy (%):")[1]
    assert "mlflow ui --backend-store-uri" in out
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("sweep-mini")
    runs = client.search_runs([exp.experiment_id], "tags.`sweep.role` = 'trial'", max_results=100)
    assert len(runs) == 8 + 2 * 3
    # Each planted cell's grid run is replaced_by a best retune (highest best val; the fake's
    # non-diverging lrs tie), and only those grid runs are.
    replaced = {r.data.tags["cell_id"]: r.data.tags["replaced_by"] for r in runs
                if "replaced_by" in r.data.tags}
    planted = {f"{b}|tiny-t5|qformer_lora/ffn|r4" for b in ("synth-scienceqa", "synth-iconqa")}
    assert set(replaced) == planted
    for cell in planted:
        val = {r.info.run_id: r.data.metrics.get("best_val_acc", -1.0) for r in runs
               if r.data.tags.get("retune_of") == cell}
        assert len(val) == 3 and val[replaced[cell]] == max(val.values()) > 0.1
    # What it cost (CPU-only: this machine at $0.40/h): every child run, the parent's totals
    # and ASHA's saving, the same numbers the end-of-sweep summary prints.
    for r in runs:
        m = r.data.metrics
        assert m["gpu_seconds"] == 0 and m["cpu_seconds"] == pytest.approx(m["wall_time_s"])
        assert m["cost_usd"] == pytest.approx(m["cpu_seconds"] * 0.4 / os.cpu_count() / 3600)
        assert m["train_samples_per_s"] > 0 and r.data.tags["node_type"] == "local"
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"]).data.metrics
    assert parent["total_cpu_seconds"] == pytest.approx(sum(r.data.metrics["cpu_seconds"]
                                                            for r in runs))
    not_run = sum(3 - int(r.data.metrics["stopped_at_epoch"]) for r in runs
                  if r.data.tags["status"] == "stopped")
    assert parent["asha_trial_epochs_not_run"] == not_run
    assert all(int(r.data.metrics["stopped_at_epoch"]) == 2 for r in runs
               if r.data.tags["status"] == "stopped")  # the one rung below the 3-epoch budget
    assert f"  14 trials: 0.0 GPU-s, {parent['total_cpu_seconds']:,.1f} CPU-s" in out
    assert f"saved by ASHA (upper bound): {not_run} trial-epochs not run" in out
    assert "saved by retuning only the starred cells (6 retune trials ran)" in out


@pytest.mark.integration
def test_a_yaml_space_over_adapters_runs_on_the_embedded_default(tmp_path):
    """adapters: [lora, dora] with the real trial on the tiny stand-ins: two cells, two runs,
    two rows of Table 1; the plain-LoRA cell keeps the id it had before adapters existed."""
    space = tmp_path / "adapters.yaml"
    space.write_text("methods: [{method: qformer_lora, sublayers: [all]}]\nranks: [1]\n"
                     "adapters: [lora, dora]\nllms: [flan-t5-xl]\nbenchmarks: [iconqa]\n"
                     "epochs: 1\nmax_train_examples: 16\nmax_eval_examples: 8\n")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "--space", str(space),
         "--storage", str(tmp_path / "rr"), "--cache-dir", str(tmp_path / "cache"),
         "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--report-dir",
         str(tmp_path / "report"), "--max-concurrent", "2"],
        cwd=REPO, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "report" / "table1.md").read_text()
    rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()[2:] if "|" in line]
    assert rows == ["qformer_lora/all", "qformer_lora/all dora"]
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("sweep-adapters")
    runs = {r.data.tags["cell_id"]: r for r in client.search_runs(
        [exp.experiment_id], "tags.`sweep.role` = 'trial'")}
    assert set(runs) == {"synth-iconqa|tiny-t5|qformer_lora/all|r1",
                         "synth-iconqa|tiny-t5|qformer_lora/all|r1|dora"}
    lora, dora = (runs[c] for c in sorted(runs))
    assert (lora.data.params["adapter"], dora.data.params["adapter"]) == ("lora", "dora")
    assert all(r.data.tags["status"] == "finished" for r in runs.values())
    # DoRA trains one magnitude per adapted Linear on top of the same LoRA matrices.
    extra = dora.data.metrics["trainable_params"] - lora.data.metrics["trainable_params"]
    assert extra == dora.data.metrics["lora_params"] - lora.data.metrics["lora_params"] > 0


SMALL_GPU_CLUSTER = """\
cluster_name: small
provider: {type: aws, region: us-west-2}
available_node_types:
  head: {resources: {CPU: 0}, node_config: {InstanceType: m5.2xlarge}}
  gpu_a10g:
    resources: {CPU: 8, GPU: 1, "accelerator_type:A10G": 1}
    node_config: {InstanceType: g5.2xlarge}
    max_workers: 4
head_node_type: head
"""


def test_a_trial_no_gpu_can_hold_is_refused_before_anything_starts(tmp_path, capsys):
    """Vicuna-7B with fp32 weights (31.7 GB of them) fits no 24 GB A10G, checkpointing or not."""
    space, cluster = tmp_path / "s.yaml", tmp_path / "cluster.yaml"
    space.write_text("methods: [baseline, qformer_lora]\nranks: [1]\nllms: [vicuna-7b]\n"
                     "benchmarks: [scienceqa]\n")
    cluster.write_text(SMALL_GPU_CLUSTER)
    err = fails(["--space", str(space), "--llm", "vicuna-7b=vicuna-7b", "--weight-dtype", "fp32",
                 "--random-weights",
                 "--cluster-config", str(cluster), "--address", "auto", "--storage",
                 str(tmp_path / "rr"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], capsys)
    assert "5 trial(s) fit on no node type's GPU; the largest GPU is A10G (22.2 GiB, 21.1 GiB usable" in err
    assert "scienceqa|vicuna-7b|baseline/none|r0: planned peak" in err
    assert "Nothing was started" in err
    assert not (tmp_path / "rr").exists() and not (tmp_path / "m.db").exists()
