"""A battery of hostile and careless inputs: each one exit 2, ONE line naming the culprit, in
seconds, no traceback, Ray never started, and nothing written outside the chosen directories
(the working directory and $HOME are checked; only the chosen --storage may appear).

In-process (no Ray, no subprocess) so the ~80 cases cost seconds. Cases that fail only after
the data is prepared share one prepared cache (the tiny one-benchmark space below).
"""
from __future__ import annotations

import io
import json
import os
import socket
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.sweep import main
from trainables.data.synth import write_synth

SPACE = "methods: [baseline]\nllms: [flan-t5-xl]\nbenchmarks: [iconqa]\nepochs: 1\n"
LORA = "methods: [{method: qformer_lora, sublayers: [ffn]}]\nllms: [flan-t5-xl]\nbenchmarks: [iconqa]\n"


@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]
    """Builds the inputs under the working directory; returns the sweep's argv."""
    needle: str
    """What the error line must contain (the culprit)."""


def space(text: str, name: str = "s.yaml") -> Callable[[Path], list[str]]:
    def setup(w: Path) -> list[str]:
        (w / name).write_text(text)
        return ["--space", str(w / name)]
    return setup


def space_bytes(data: bytes, name: str = "s.yaml") -> Callable[[Path], list[str]]:
    def setup(w: Path) -> list[str]:
        (w / name).write_bytes(data)
        return ["--space", str(w / name)]
    return setup


def special_space(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def setup(w: Path) -> list[str]:
        make(w / "s.yaml")
        return ["--space", str(w / "s.yaml")]
    return setup


def with_space(*extra: str, text: str = SPACE) -> Callable[[Path], list[str]]:
    def setup(w: Path) -> list[str]:
        (w / "s.yaml").write_text(text)
        return ["--space", str(w / "s.yaml"), *[e.replace("{w}", str(w)) for e in extra]]
    return setup


def model_dir(build: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """--llm flan-t5-xl=DIR with DIR built by ``build`` (an incomplete checkpoint)."""
    def setup(w: Path) -> list[str]:
        root = w / "model"
        root.mkdir()
        build(root)
        (w / "s.yaml").write_text(SPACE)
        return ["--space", str(w / "s.yaml"), "--llm", f"flan-t5-xl={root}"]
    return setup


def config(root: Path, text_type: str = "t5", **extra) -> None:
    (root / "config.json").write_text(json.dumps(
        {"model_type": "instructblip", "text_config": {"model_type": text_type}, **extra}))


def sqa_root(corrupt: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """--data-root scienceqa=DIR: a small official layout, then corrupted."""
    def setup(w: Path) -> list[str]:
        root = write_synth("synth-scienceqa", w / "sqa", 3, {"train": 3, "val": 2, "test": 2})
        corrupt(root)
        (w / "s.yaml").write_text("methods: [baseline]\nllms: [flan-t5-xl]\n"
                                  "benchmarks: [scienceqa]\nepochs: 1\n")
        return ["--space", str(w / "s.yaml"), "--data-root", f"scienceqa={root}"]
    return setup


def parquet_root(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """--data-root scienceqa=DIR holding one 'train' shard of the hub's parquet export."""
    def setup(w: Path) -> list[str]:
        root = w / "hub"
        root.mkdir()
        make(root / "train-00000-of-00001.parquet")
        (w / "s.yaml").write_text("methods: [baseline]\nllms: [flan-t5-xl]\n"
                                  "benchmarks: [scienceqa]\nepochs: 1\n")
        return ["--space", str(w / "s.yaml"), "--data-root", f"scienceqa={root}"]
    return setup


def first_image(root: Path) -> Path:
    return sorted((root / "images").rglob("image.png"))[0]


def replace_with(path: Path, make: Callable[[Path], None]) -> None:
    path.unlink()
    make(path)


def edit_problems(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def corrupt(root: Path) -> None:
        problems = json.loads((root / "problems.json").read_text())
        change(problems)
        (root / "problems.json").write_text(json.dumps(problems))
    return corrupt


def first_problem(problems: dict) -> dict:
    return problems[sorted(problems)[0]]


def hold_lock(w: Path) -> list[str]:
    """Another live sweep of the same name: its lock is held (here by this process's fd)."""
    from orchestrator.driver.sweep_lock import SweepLock
    lock = SweepLock(str(w / "rr"), "sweep-s", w / "cache")
    lock.acquire()
    HELD.append(lock)
    (w / "s.yaml").write_text(SPACE)
    return ["--space", str(w / "s.yaml")]


HELD: list = []
LONG = "x" * 50_000

CASES = [
    # -- the space file is not a small UTF-8 regular file -------------------------------------
    Case("space-is-a-directory", special_space(lambda p: p.mkdir()), "is a directory"),
    Case("space-is-a-fifo", special_space(os.mkfifo), "not a regular file"),
    Case("space-is-dev-zero", special_space(lambda p: p.symlink_to("/dev/zero")), "not a regular"),
    Case("space-is-a-symlink-loop", special_space(lambda p: p.symlink_to(p)), "symbolic links"),
    Case("space-over-64k", space("# pad\n" * 20_000), "more than the 65536"),
    Case("space-latin1", space_bytes(b"methods: [baseline]\n# caf\xe9\n"), "not UTF-8 text"),
    Case("space-utf16", space_bytes("methods: [baseline]\n".encode("utf-16")), "not UTF-8 text"),
    Case("space-empty-file", space(""), "must hold a mapping"),
    Case("space-top-level-list", space("- baseline\n"), "must hold a mapping"),
    Case("space-nested-30k", space("methods: " + "[" * 30_000 + "]" * 30_000),
         "nested deeper than"),
    Case("space-python-tag", space("methods: !!python/object/apply:os.system [id]\n"),
         "could not determine a constructor"),
    Case("space-two-documents", space("methods: [baseline]\n---\nmethods: [baseline]\n"),
         "single document"),
    Case("space-tab-indent", space("methods:\n\t- baseline\n"), "not usable YAML at line 2"),
    Case("space-int-key", space("1: x\nmethods: [baseline]\n"), "unknown key(s) 1"),
    Case("space-null-key", space("~: x\nmethods: [baseline]\n"), "unknown key(s) None"),
    Case("space-unhashable-key", space("? [a, b]\n: x\nmethods: [baseline]\n"), "unhashable"),
    Case("space-long-value", space(f"methods: [baseline]\nprecision: {LONG}\n"),
         "(50002 chars); allowed: auto, fp32, bf16"),
    Case("space-merge-key-alias", space("a: &a {epochs: 2}\n<<: *a\nmethods: [baseline]\n"),
         "alias *'a' refused"),
    Case("space-newline-in-name", space('methods: ["base\\nline"]\n'), "unknown method 'base\\nline'"),
    # -- the space's vocabulary and values ----------------------------------------------------
    Case("methods-a-string", space("methods: baseline\n"), "'methods' must be a list"),
    Case("methods-entry-an-int", space("methods: [7]\n"), "bad methods entry 7"),
    Case("methods-entry-extra-key", space("methods: [{method: baseline, rank: 2}]\n"),
         "unknown key(s) rank in methods entry"),
    Case("sublayers-empty", space("methods: [{method: qformer_lora, sublayers: []}]\nranks: [1]\n"),
         "must be a non-empty list"),
    Case("rank-a-float", space(LORA + "ranks: [1.5]\n"), "bad rank 1.5"),
    Case("rank-a-bool", space(LORA + "ranks: [true]\n"), "bad rank True"),
    Case("rank-zero", space(LORA + "ranks: [0]\n"), "bad rank 0"),
    Case("rank-a-set", space(LORA + "ranks: !!set {1: null}\n"), "'ranks' must be a list"),
    Case("rank-above-layer", space(LORA + "ranks: [4096]\n"), "exceeds the smallest layer"),
    Case("rank-1e30", space(LORA + "ranks: [1000000000000000000000000000000]\n"),
         "exceeds the smallest layer"),
    Case("duplicate-method-entries", space("methods: [baseline, baseline]\nllms: [flan-t5-xl]\n"
                                           "benchmarks: [iconqa]\n"), "appears twice"),
    Case("unknown-llm", space("methods: [baseline]\nllms: [gpt-4]\n"), "unknown llm 'gpt-4'"),
    Case("unknown-benchmark", space("methods: [baseline]\nbenchmarks: [imagenet]\n"),
         "unknown benchmark 'imagenet'"),
    Case("epochs-a-word", space(SPACE.replace("epochs: 1", "epochs: ten")), "epochs"),
    Case("epochs-a-date", space(SPACE.replace("epochs: 1", "epochs: 2001-12-14")), "epochs"),
    Case("epochs-infinite", space(SPACE.replace("epochs: 1", "epochs: .inf")), "epochs"),
    Case("epochs-1e9", space(SPACE.replace("epochs: 1", "epochs: 1000000000")),
         "epochs 1000000000 is outside [1, 1000]"),
    Case("lr-nan", space(SPACE + "lr: .nan\n"), "lr"),
    Case("lr-negative", space(SPACE + "lr: -1e-4\n"), "lr must be > 0"),
    Case("lr-5", space(SPACE + "lr: 5\n"), "lr 5.0 is outside"),
    Case("lr-infinite", space(SPACE + "lr: .inf\n"), "lr inf is outside"),
    Case("seed-2-to-40", space(SPACE + "seed: 1099511627776\n"), "seed 1099511627776 is outside"),
    Case("batch-size-zero", space(SPACE + "batch_size: 0\n"), "batch_size must be >= 1"),
    Case("batch-size-million", space(SPACE + "batch_size: 1000000\n"), "batch_size 1000000"),
    Case("weight-decay-binary", space(SPACE + "weight_decay: !!binary aGk=\n"), "weight_decay"),
    Case("space-sets-a-path", space(SPACE + "vit_cache_dir: /etc\n"),
         "unknown key(s) vit_cache_dir"),
    Case("space-sets-cache-dir", space(SPACE + "cache_dir: /\n"), "unknown key(s) cache_dir"),
    Case("prompt-beyond-positions", with_space(
        text="methods: [baseline]\nllms: [vicuna-7b]\nbenchmarks: [iconqa]\nepochs: 1\n"
             "max_prompt_tokens: 30000\n"), "positions"),
    # -- names that would become paths ---------------------------------------------------------
    Case("name-with-newline", with_space("--name", "a\nb"), "--name 'a\\nb' is not a safe name"),
    Case("name-rtl-override", with_space("--name", "x\u202egnp.exe"), "is not a safe name"),
    Case("name-like-an-option", with_space("--name=-rf"), "--name '-rf' is not a safe name"),
    Case("name-hidden", with_space("--name", ".ssh"), "--name '.ssh' is not a safe name"),
    Case("name-101-chars", with_space("--name", "n" * 101), "is not a safe name"),
    Case("name-backslash", with_space("--name", "..\\x"), "is not a safe name"),
    Case("space-name-empty", lambda w: ["--space", ""], "unknown space ''"),
    Case("space-name-10k", lambda w: ["--space", "q" * 10_000], "(10002 chars)"),
    # -- options that parse but cannot run ------------------------------------------------------
    Case("cpus-nan", with_space("--cpus-per-trial", "nan"), "--cpus-per-trial"),
    Case("gpus-infinite", with_space("--gpus-per-trial", "inf"), "--gpus-per-trial"),
    Case("reduction-factor-nan", with_space("--reduction-factor", "nan"), "--reduction-factor"),
    Case("cpus-beyond-machine", with_space("--cpus-per-trial", "4096"), "this machine has"),
    Case("llm-no-equals", with_space("--llm", "flan-t5-xl"), "expected NAME=VALUE"),
    Case("llm-unknown-paper-name", with_space("--llm", "gpt-4=tiny-t5"), "expected NAME=VALUE"),
    Case("data-root-a-file", with_space("--data-root", "iconqa={w}/s.yaml"), "no such directory"),
    Case("address-from-env-unreachable", with_space(), "does not answer"),
    Case("report-dir-a-file", with_space("--report-dir", "{w}/s.yaml"), "--report-dir"),
    # -- model checkpoints --------------------------------------------------------------------
    Case("model-config-a-directory", model_dir(lambda r: (r / "config.json").mkdir()),
         "config.json is a directory"),
    Case("model-config-not-json", model_dir(lambda r: (r / "config.json").write_text("{oops")),
         "config.json is not valid JSON"),
    Case("model-config-not-instructblip", model_dir(
        lambda r: (r / "config.json").write_text('{"model_type": "bert"}')), "not describe an"),
    Case("model-wrong-family", model_dir(lambda r: config(r, "llama")), "holds a 'llama' LLM"),
    Case("model-no-weights", model_dir(config), "no weights"),
    Case("model-missing-shard", model_dir(lambda r: (config(r), (
        r / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {"a": "model-00001-of-00002.safetensors"}})))),
         "model-00001-of-00002.safetensors"),
    Case("model-no-tokenizer", model_dir(lambda r: (config(r), (
        r / "model.safetensors").write_bytes(b"x"))), "tokenizer"),
    # -- benchmark files ----------------------------------------------------------------------
    Case("problems-a-fifo", sqa_root(lambda r: replace_with(r / "problems.json", os.mkfifo)),
         "not a scienceqa data root"),
    Case("problems-latin1", sqa_root(lambda r: (r / "problems.json").write_bytes(
        b'{"x\xe9": 1}')), "problems.json: is not UTF-8"),
    Case("problems-nested-deep", sqa_root(lambda r: (r / "problems.json").write_text(
        "[" * 200_000 + "]" * 200_000)), "problems.json: JSON nested too deeply"),
    Case("problems-a-list", sqa_root(lambda r: (r / "problems.json").write_text("[]")),
         "expected an object of pid -> problem"),
    Case("image-is-dev-zero", sqa_root(lambda r: replace_with(
        first_image(r), lambda p: p.symlink_to("/dev/zero"))), "escapes the data root"),
    Case("image-is-a-fifo", sqa_root(lambda r: replace_with(first_image(r), os.mkfifo)),
         "not a regular file"),
    Case("image-is-a-directory", sqa_root(lambda r: replace_with(first_image(r),
                                                                 lambda p: p.mkdir())), "image"),
    Case("image-empty", sqa_root(lambda r: first_image(r).write_bytes(b"")),
         "image cannot be decoded"),
    Case("image-name-escapes", sqa_root(edit_problems(
        lambda p: first_problem(p).update(image="../../../../etc/passwd"))), "escapes the data root"),
    Case("question-a-huge-list", sqa_root(edit_problems(
        lambda p: first_problem(p).update(question=list(range(100_000))))),
         "expected a string, got <list of 100000 items>"),
    Case("split-list-missing-val", sqa_root(lambda r: (r / "pid_splits.json").write_text(
        json.dumps({k: v for k, v in json.loads((r / "pid_splits.json").read_text()).items()
                    if k != "val"}))), "val"),
    Case("parquet-garbage", parquet_root(lambda p: p.write_bytes(b"PAR1 not really")),
         "not a readable parquet file"),
    Case("parquet-a-fifo", parquet_root(os.mkfifo), "not a regular file"),
    Case("parquet-dev-zero", parquet_root(lambda p: p.symlink_to("/dev/zero")),
         "not a regular file"),
    # -- storage, tracking, concurrency ---------------------------------------------------------
    Case("storage-under-a-file", with_space("--storage", "{w}/s.yaml/rr"), "is not writable"),
    Case("storage-in-proc", with_space("--storage", "/proc/h16-no"), "is not writable"),
    Case("tracking-ftp", with_space("--tracking-uri", "ftp://127.0.0.1/x"), "ftp://127.0.0.1/x"),
    Case("tracking-sqlite-a-directory", with_space("--tracking-uri", "sqlite:///{w}"),
         "sqlite:///"),
    Case("tracking-sqlite-missing-dir", with_space("--tracking-uri", "sqlite:///{w}/no/m.db"),
         "does not exist"),
    Case("tracking-http-refused", with_space("--tracking-uri", "http://127.0.0.1:1"),
         "http://127.0.0.1:1 is unreachable"),
    Case("tracking-http-bad-host", with_space("--tracking-uri", "http://256.1.1.1:5000"),
         "256.1.1.1"),
    Case("tracking-empty-env", with_space(), "MLFLOW_TRACKING_URI"),
    Case("same-name-running", hold_lock, "is already running (pid"),
]

ENV = {"address-from-env-unreachable": {"RAY_ADDRESS": "127.0.0.9:9"},
       "tracking-empty-env": {"MLFLOW_TRACKING_URI": "nonsense:"}}
"""Cases whose culprit is in the environment."""
OWN = ("--storage", "--tracking-uri", "--report-dir")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One prepared synth-iconqa cache for the cases that fail after data preparation."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for a hostile input")
    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_fails_with_one_line(case, tmp_path, cache, monkeypatch):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir(), home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    for key, value in ENV.get(case.name, {}).items():
        monkeypatch.setenv(key, value)
    argv = case.setup(work)
    defaults = {"--storage": str(work / "rr"), "--tracking-uri": f"sqlite:///{work}/m.db",
                "--report-dir": str(work / "rep"), "--cache-dir": str(cache)}
    if case.name == "tracking-empty-env":
        defaults.pop("--tracking-uri")
    argv += [x for k, v in defaults.items() if k not in argv for x in (k, v)]
    before = set(os.listdir(work))
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    try:
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exit_:
            main(argv)
    finally:
        while HELD:
            HELD.pop().release()
    elapsed = time.monotonic() - started
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert exit_.value.code == 2, err.getvalue()[-2000:]
    assert len(lines) == 1, lines[:5]
    assert lines[0].startswith("sweep: error: ") and len(lines[0]) < 700, lines[0][:300]
    assert case.needle in lines[0], lines[0]
    assert "Traceback" not in out.getvalue() + err.getvalue()
    assert elapsed < 30, f"{elapsed:.1f} s"
    written = set(os.listdir(work)) - before
    assert written <= {"rr"}, written  # at most the chosen storage (probed, then refused)
    assert not os.listdir(home)


def test_the_battery_is_big_enough():
    assert len(CASES) >= 50


def test_a_stale_lock_of_a_dead_sweep_does_not_block(tmp_path):
    """The lock is flock: a crashed sweep's lock file is not a lock."""
    from orchestrator.driver.sweep_lock import SweepLock
    (tmp_path / "rr" / "x").mkdir(parents=True)
    (tmp_path / "rr" / "x" / ".sweep.lock").write_text('{"pid": 1, "host": "gone"}')
    lock = SweepLock(str(tmp_path / "rr"), "x", tmp_path / "cache")
    lock.acquire()
    lock.release()


def test_the_lock_names_the_holder(tmp_path):
    from orchestrator.driver.sweep_lock import SweepLock, SweepLocked
    first = SweepLock(str(tmp_path / "rr"), "x", tmp_path / "cache")
    first.acquire()
    try:
        with pytest.raises(SweepLocked, match=f"pid {os.getpid()} on host "
                                              f"{socket.gethostname()}"):
            SweepLock(str(tmp_path / "rr"), "x", tmp_path / "cache").acquire()
    finally:
        first.release()


def test_a_refused_sweep_leaves_no_lock_behind(tmp_path):
    from orchestrator.driver.sweep_lock import LOCK_FILE, SweepLock
    lock = SweepLock(str(tmp_path / "rr"), "x", tmp_path / "cache")
    lock.acquire()
    lock.release(discard=True)
    assert not (tmp_path / "rr" / "x").exists()
    lock.acquire()
    (tmp_path / "rr" / "x" / "tuner.pkl").write_bytes(b"")  # Tune wrote: the lock stays
    lock.release(discard=True)
    assert (tmp_path / "rr" / "x" / LOCK_FILE).exists()
