"""The on-disk feature store: round trip, corruption, concurrent filling, eviction, one per node."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables.feature_store import CorruptEntryWarning, FeatureStore

HELPER = Path(__file__).with_name("_fill_cache.py")


def _keys(n, salt="k"):
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


def _compute(record):
    def compute(keys):
        record.extend(keys)
        return [(torch.full((5, 4), float(int(k[:6], 16))), 0.25) for k in keys]
    return compute


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_entry_reads_back_exactly_memory_mapped(tmp_path, dtype):
    store = FeatureStore(tmp_path, "ns", max_bytes=2**20)
    key, tensor = _keys(1)[0], torch.randn(17, 48).to(dtype)
    store.put(key, tensor, compute_s=0.125)
    entry = store.open(key)
    assert entry.tensor.dtype == dtype and torch.equal(entry.tensor, tensor) and entry.compute_s == 0.125
    assert store.path(key).read_bytes()[:1] == b"{" and not list(store.path(key).parent.glob(".tmp-*"))
    assert store.open(_keys(2)[1]) is None  # absent


def test_fill_computes_only_what_is_missing_in_batches(tmp_path):
    store, record = FeatureStore(tmp_path, "ns", max_bytes=2**20), []
    keys = _keys(10)
    store.put(keys[3], torch.zeros(5, 4), 1.0)
    assert store.fill(keys, _compute(record), batch_size=4) == record
    assert sorted(record) == sorted(keys[:3] + keys[4:])
    assert store.fill(keys, _compute(record), batch_size=4) == []  # all present now


@pytest.mark.parametrize("where", ["payload", "header", "truncated"])
def test_a_corrupted_entry_is_detected_deleted_and_recomputed_with_a_warning(tmp_path, where):
    store, record = FeatureStore(tmp_path, "ns", max_bytes=2**20), []
    key = _keys(1)[0]
    store.fill([key], _compute(record), batch_size=1)
    path = store.path(key)
    data = bytearray(path.read_bytes())
    if where == "payload":
        data[-3] ^= 0xFF
    elif where == "header":
        data[data.index(b'"shape"') + 2] ^= 0x01
    else:
        del data[-8:]
    path.write_bytes(bytes(data))
    with pytest.warns(CorruptEntryWarning, match="corrupt"):
        assert store.open(key) is None
    assert not path.exists()
    assert store.fill([key], _compute(record), batch_size=1) == [key]
    assert torch.equal(store.open(key).tensor, torch.full((5, 4), float(int(key[:6], 16))))


def test_an_entry_under_another_key_is_rejected(tmp_path):
    """A file moved or copied under the wrong name (or namespace) is never served."""
    store = FeatureStore(tmp_path, "ns", max_bytes=2**20)
    a, b = _keys(2)
    store.put(a, torch.ones(2, 2), 0.0)
    store.path(b).parent.mkdir(parents=True, exist_ok=True)
    store.path(b).write_bytes(store.path(a).read_bytes())
    with pytest.warns(CorruptEntryWarning):
        assert store.open(b) is None


def test_each_node_has_its_own_entries_under_a_shared_root(tmp_path):
    one = FeatureStore(tmp_path, "ns", max_bytes=2**20, node="node-a")
    two = FeatureStore(tmp_path, "ns", max_bytes=2**20, node="node-b")
    key = _keys(1)[0]
    one.put(key, torch.ones(2), 0.0)
    assert one.open(key) is not None and two.open(key) is None


def test_eviction_keeps_the_bound_dropping_least_recently_used_first(tmp_path):
    store = FeatureStore(tmp_path, "ns", max_bytes=10 * 1024)
    keys = _keys(12)
    for i, key in enumerate(keys):  # ~1.1 KiB each: 12 exceed the 10 KiB bound
        store.put(key, torch.zeros(256), 0.0)
        os.utime(store.path(key), (1000 + i, 1000 + i))
    store.open(keys[0])  # used recently: survives although written first
    freed = store.evict(protect=[keys[1]])
    left = {p.stem for p in store.dir.glob("??/*.feat")}
    size = sum(p.stat().st_size for p in store.dir.glob("??/*.feat"))
    assert freed > 0 and size <= 0.9 * 10 * 1024
    assert {keys[0], keys[1], keys[-1]} <= left and keys[2] not in left


def _spawn(root, images, out, barrier):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, str(HELPER), str(root), str(images), str(out), str(barrier)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_two_processes_filling_the_same_images_at_once(tmp_path):
    """Both finish; every entry is valid; each image is computed once while the stripe locks are
    honoured, and at most twice when a process stops waiting for them at once (the race)."""
    procs = [_spawn(tmp_path / "cache", 48, tmp_path / f"out{i}.json", tmp_path / "barrier") for i in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()[-2000:]
    runs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    for phase, most in (("locked", 1), ("race", 2)):
        one, two = runs[0][phase], runs[1][phase]
        counts = {}
        for key in one["computed"] + two["computed"]:
            counts[key] = counts.get(key, 0) + 1
        keys = set(one["keys"])
        assert set(two["keys"]) == keys and len(keys) == 48 and set(counts) == keys, phase
        assert max(counts.values()) <= most, phase
        store = FeatureStore(tmp_path / "cache", one["namespace"], max_bytes=2**30)
        assert all(store.open(k) is not None for k in keys), phase
        assert one["checksum"] == two["checksum"], phase  # both read the same features
