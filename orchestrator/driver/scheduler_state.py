"""Reading and writing the scheduler's state file in the experiment directory.

Why a file of our own: Ray's ``Tuner.restore`` rebuilds the scheduler from the pickle taken
when the sweep started, so every rung record ASHA made before an interruption is lost and a
resumed sweep would judge later trials against empty rungs -- stopping different trials than
an uninterrupted sweep. ``GroupedASHA`` therefore writes its records here after every decision
(before Tune even snapshots its own experiment state), and ``--resume`` loads them back.

The location is a local path or any URI pyarrow.fs understands (the sweep's --storage): local
files are replaced atomically (write + rename); object stores replace an object atomically on
upload.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs

FILE_NAME = "scheduler/asha_state.json"
"""In a subfolder on purpose: on restore, Tune copies every *.json / *.pkl at the top of the
experiment directory into its staging folder and uploads them back at each snapshot, which
would overwrite the live file with the copy taken at the restart (measured: a resumed sweep's
new stops vanished from a top-level file). Subfolders are not copied."""


def state_uri(experiment_path: str) -> str:
    """The state file of an experiment directory (orchestrator.tuner.experiment_path)."""
    return experiment_path.rstrip("/") + "/" + FILE_NAME


def _remote(uri: str) -> tuple[pyarrow.fs.FileSystem, str] | None:
    if "://" not in uri or uri.startswith("file://"):
        return None
    return pyarrow.fs.FileSystem.from_uri(uri)


def _local(uri: str) -> Path:
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri)


def write_state(uri: str, state: dict[str, Any]) -> None:
    data = json.dumps(state, sort_keys=True).encode()
    remote = _remote(uri)
    if remote is not None:
        fs, path = remote
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    path = _local(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_state(uri: str) -> dict[str, Any] | None:
    """The saved state, or None when the experiment has none yet (e.g. a FIFO sweep)."""
    remote = _remote(uri)
    try:
        if remote is not None:
            fs, path = remote
            if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
                return None
            with fs.open_input_stream(path) as f:
                data = f.read()
        else:
            path = _local(uri)
            if not path.is_file():
                return None
            data = path.read_bytes()
        return json.loads(data)
    except (OSError, ValueError) as err:
        raise ValueError(f"scheduler state {uri} cannot be read ({err}); it is written by the "
                         f"sweep itself -- was it edited or truncated?") from None
