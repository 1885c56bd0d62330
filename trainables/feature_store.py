"""A node-local, concurrency-safe, checksummed, size-bounded store of feature tensors on disk.

Why a store of its own: every trial on a node feeds the same frozen ViT the same images with the
same deterministic transform; the store lets the first trial compute each image's features and
every later one (and every later epoch) read them back. It knows nothing about models: entries
are tensors under opaque hex keys (trainables.vision_features builds the keys).

Layout: ``ROOT/<node>/<namespace>/<key[:2]>/<key>.feat``. ``<node>`` is the host name, so a
cache directory on storage several nodes share still gives each node its own entries (and its
own locks, which need not work across machines); ``<namespace>`` (the vision weights'
fingerprint) keeps entries of different checkpoints apart. An entry file is a small JSON header
(key, dtype, shape, CRC-32 of the payload, seconds it took to compute) padded to 64 bytes,
then the raw tensor bytes.

Guarantees:
- **Atomic writes**: an entry is written to a temporary file in its directory and renamed into
  place (``os.replace``), so a reader sees the whole entry or none (no fsync: a crash can leave a
  truncated entry after a power loss, which the checksum then catches).
- **Computed at most once in the common case**: ``fill`` claims an entry by taking one of 256
  striped ``flock`` locks (node-local, released by the kernel when a process dies) without
  blocking; entries another process is computing are revisited until they appear. Only a lock
  held longer than ``lock_timeout_s`` (a hung process) lets a second process compute the same
  entry, so an entry is computed at most twice.
- **Checksummed**: ``open`` verifies the header and the payload's CRC-32; a bad entry is deleted
  with a warning and reported missing, so the caller recomputes it.
- **Memory-mapped reads**: a payload is a private read-only mapping of the file
  (``torch.from_file``, pages shared with every process reading it through the page cache); an
  entry deleted while mapped stays readable by whoever mapped it (POSIX unlink semantics).
- **Bounded size, evicting least recently used**: after a trial wrote entries, if the node's
  entries exceed ``max_bytes``, the least recently used ones (modification time, which every
  ``open`` refreshes) are deleted until the total is at most 90% of ``max_bytes``; entries the
  calling trial holds are never evicted by it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

FORMAT = "vit-features/1"
"""Header format tag; bump when the entry layout changes (old entries then read as corrupt)."""
_ALIGN = 64
_STRIPES = 256
_LOW_WATERMARK = 0.9
_POLL_S = 0.05
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}


class CorruptEntryWarning(UserWarning):
    """An entry failed its checks and was deleted; it will be recomputed."""


@dataclass(frozen=True)
class Entry:
    """One entry read back: the features and what computing them once cost."""

    tensor: torch.Tensor
    compute_s: float
    """Seconds the computing process spent on this entry (its share of a batch)."""


ComputeFn = Callable[[Sequence[str]], list[tuple[torch.Tensor, float]]]
"""compute(keys) -> one (tensor, seconds) per key, in order."""


class FeatureStore:
    """Entries of one namespace on this node (see the module docstring)."""

    def __init__(self, root: str | Path, namespace: str, max_bytes: int,
                 lock_timeout_s: float = 600.0, node: str | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError(f"feature cache size bound must be positive, got {max_bytes} bytes")
        self.node_dir = Path(root) / (node or socket.gethostname())
        self.dir = self.node_dir / namespace
        self.max_bytes = int(max_bytes)
        self.lock_timeout_s = lock_timeout_s
        (self.node_dir / "locks").mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.feat"

    # -- writing ---------------------------------------------------------------------------
    def put(self, key: str, tensor: torch.Tensor, compute_s: float) -> int:
        """Write one entry atomically; returns its size in bytes."""
        t = tensor.detach().to("cpu").contiguous()
        dtype = next((n for n, d in DTYPES.items() if d == t.dtype), None)
        if dtype is None:
            raise ValueError(f"feature dtype {t.dtype} cannot be cached; allowed: {', '.join(DTYPES)}")
        payload = t.view(-1).view(torch.uint8).numpy()
        header = json.dumps({"format": FORMAT, "key": key, "dtype": dtype, "shape": list(t.shape),
                             "crc32": zlib.crc32(payload), "compute_s": float(compute_s)}).encode()
        header += b" " * (-(len(header) + 1) % _ALIGN) + b"\n"
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(header)
                f.write(payload.data)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return len(header) + payload.nbytes

    def fill(self, keys: Iterable[str], compute: ComputeFn, batch_size: int) -> list[str]:
        """Make every key present, computing missing ones ``batch_size`` at a time; returns the
        keys this process computed. Keys another process is computing are waited for."""
        todo = [k for k in dict.fromkeys(keys) if not self.path(k).exists()]
        computed: list[str] = []
        deadline = time.monotonic() + self.lock_timeout_s
        while todo:
            with ExitStack() as held:
                mine = self._claim(todo, batch_size, held, force=time.monotonic() > deadline)
                if mine:
                    for key, (tensor, seconds) in zip(mine, compute(mine)):
                        self.put(key, tensor, seconds)
                    computed += mine
            todo = [k for k in todo if not self.path(k).exists()]
            if todo and not mine:
                time.sleep(_POLL_S)
        return computed

    def _claim(self, todo: list[str], batch_size: int, held: ExitStack, force: bool) -> list[str]:
        """Up to ``batch_size`` missing keys whose stripe lock this process now holds (all of
        them, unlocked, once ``force``: the waiting time ran out)."""
        mine: list[str] = []
        locked: dict[int, bool] = {}
        for key in todo:
            if len(mine) == batch_size:
                break
            stripe = int(key[:2], 16) % _STRIPES
            if stripe not in locked:
                locked[stripe] = force or self._try_lock(f"{stripe:02x}", held)
            if locked[stripe] and not self.path(key).exists():
                mine.append(key)
        return mine

    def _try_lock(self, name: str, held: ExitStack) -> bool:
        """Take ``locks/<name>.lock`` without blocking; ``held`` releases it."""
        f = held.enter_context(open(self.node_dir / "locks" / f"{name}.lock", "a+b"))
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        held.callback(fcntl.flock, f, fcntl.LOCK_UN)
        return True

    # -- reading ---------------------------------------------------------------------------
    def open(self, key: str) -> Entry | None:
        """The entry memory-mapped and verified, or None if absent; a corrupt entry is deleted
        with a CorruptEntryWarning and reported as None."""
        path = self.path(key)
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                line = f.readline(4096)
            entry = self._map(path, key, size, line)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RuntimeError) as err:
            warnings.warn(f"feature cache entry {path} is corrupt ({err}); deleting and recomputing it",
                          CorruptEntryWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used: eviction goes by modification time
        return entry

    @staticmethod
    def _map(path: Path, key: str, size: int, line: bytes) -> Entry:
        offset = len(line)
        if offset % _ALIGN or not line.endswith(b"\n"):
            raise ValueError("no header line")
        header = json.loads(line.decode())
        if header["format"] != FORMAT or header["key"] != key:
            raise ValueError(f"header names {header.get('format')!r}/{header.get('key')!r}")
        dtype = DTYPES[header["dtype"]]
        shape = [int(n) for n in header["shape"]]
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        if size != offset + nbytes:
            raise ValueError(f"{size} bytes, expected {offset + nbytes}")
        raw = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)[offset:]
        if zlib.crc32(raw.numpy()) != header["crc32"]:
            raise ValueError("payload checksum mismatch")
        return Entry(tensor=raw.view(dtype).view(shape), compute_s=float(header["compute_s"]))

    # -- eviction --------------------------------------------------------------------------
    def evict(self, protect: Iterable[str] = ()) -> int:
        """Enforce the size bound over every namespace of this node (module docstring); returns
        the bytes deleted. Skipped if another process is evicting right now."""
        with ExitStack() as held:
            if not self._try_lock("evict", held):
                return 0
            keep = {f"{k}.feat" for k in protect}
            entries = []
            for path in self.node_dir.glob("*/??/*.feat"):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, path))
            total = sum(size for _, size, _ in entries)
            if total <= self.max_bytes:
                return 0
            freed, target = 0, total - int(_LOW_WATERMARK * self.max_bytes)
            for _, size, path in sorted(entries):
                if freed >= target:
                    break
                if path.name not in keep:
                    path.unlink(missing_ok=True)
                    freed += size
            return freed
