"""Sweep names and the paths made from them: names are names, and writes stay where chosen.

A sweep name becomes a directory under --storage (Tune's experiment), a directory under the
MLflow artifact root, a report directory and the MLflow experiment name. ``--name ../x`` or an
absolute name would move Tune's experiment out of --storage, and ``--name ..`` made the
artifact and report directories the working directory itself (``log_artifacts`` then copied the
working directory into itself). So a name is a short run of safe characters, no separators and
no ``..``, checked before anything is written; and every directory the sweep derives from a
root is proven to lie under that root (``under``) before it is created.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from trainables.excerpt import excerpt

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]{0,99}")
"""A letter or digit, then up to 99 of letters, digits and ``_ . = + -``."""


class UnsafeName(ValueError):
    """A name or derived path that could escape its directory; names the option and the value."""


def check_name(name: str, what: str = "--name") -> str:
    """``name`` itself, if it is safe as one path component everywhere (POSIX, S3, MLflow)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise UnsafeName(f"{what} {excerpt(name)} is not a safe name: use 1-100 letters, digits "
                         f"and _ . = + - (starting with a letter or digit; no '/', no '..')")
    return name


def default_name(space_name: str) -> str:
    """sweep-<space>, with anything unsafe in the space's name (a YAML file's stem) made '_'."""
    safe = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", space_name).replace("..", "_")[:94]
    return check_name(f"sweep-{safe}")


def under(root: str | Path, *parts: str, what: str = "path") -> Path:
    """root/parts, proven to lie under ``root`` after resolving symlinks and ``..``.

    Raises UnsafeName naming both when it does not (a part with a separator or ``..``, or a
    symlink inside ``root`` that points out of it).
    """
    base = Path(root).expanduser().resolve()
    path = base.joinpath(*parts).resolve()
    if (parts and path == base) or not path.is_relative_to(base):
        raise UnsafeName(f"{what} {excerpt(str(Path(root).joinpath(*parts)), 200)} resolves to "
                         f"{excerpt(str(path), 200)}, outside {base}; refused")
    return path


def state_dir(storage: str, name: str, cache_dir: str | Path) -> Path:
    """Where the driver keeps a sweep's own files (its lock, its tracking outbox): the Tune
    experiment directory for a local --storage; for a cloud one (no atomic create, no append)
    a directory in the local --cache-dir, keyed by storage and name."""
    if "://" in storage:
        key = hashlib.sha256(f"{storage}\0{name}".encode()).hexdigest()[:16]
        return under(cache_dir, "sweeps", f"{check_name(name)}-{key}", what="sweep state directory")
    return under(storage, check_name(name), what="experiment directory")
