"""Checkpoints read from shared storage never run code and are refused unless a trial wrote them."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from trainables.checkpoint import META, STATE, CheckpointError, verify_checkpoint

CELL = {"method": "qformer_lora", "sublayer": "all", "rank": 4, "llm": "tiny-t5",
        "benchmark": "synth-iconqa"}


def honest_checkpoint(path: Path) -> Path:
    """meta.json + state.pt shaped exactly as save_checkpoint writes them (final epoch included:
    NaN, inf and bools in the loop state must load under weights_only)."""
    path.mkdir(parents=True, exist_ok=True)
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([param], lr=1e-3)
    param.grad = torch.ones(3)
    opt.step()
    loop = {"epoch": 2, "best_val_acc": 0.5, "best_epoch": 2, "since_best": 0, "ref_loss": 1.25,
            "final_metrics": {"epoch": 2, "train_loss": float("nan"), "diverged": False,
                              "lr": float("inf"), "test_acc": 0.4, "done": True}}
    torch.save({"optimizer": opt.state_dict(), "loop": loop}, path / STATE)
    (path / META).write_text(json.dumps({"config": CELL, "epoch": 2}))
    return path


class Payload:
    """Unpickling this runs a shell command (what a crafted state.pt in a shared bucket does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_an_honest_checkpoint_loads(tmp_path):
    state = verify_checkpoint(honest_checkpoint(tmp_path / "c"), CELL)
    assert state["loop"]["final_metrics"]["done"] is True


def test_a_pickle_payload_is_refused_without_running(tmp_path):
    ckpt = honest_checkpoint(tmp_path / "c")
    marker = tmp_path / "pwned"
    torch.save({"optimizer": {}, "loop": Payload(marker)}, ckpt / STATE)
    with pytest.raises(CheckpointError) as err:
        verify_checkpoint(ckpt, CELL)
    assert not marker.exists()
    message = str(err.value)
    assert str(ckpt / STATE) in message and "GLOBAL posix.system" in message
    assert len(message) < 400 and "\n" not in message


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + b"\0" * 40])
def test_garbage_state_is_refused(tmp_path, content):
    ckpt = honest_checkpoint(tmp_path / "c")
    (ckpt / STATE).write_bytes(content)
    with pytest.raises(CheckpointError, match="refused, not a state a trial writes"):
        verify_checkpoint(ckpt)


def test_a_state_of_another_shape_is_refused(tmp_path):
    ckpt = honest_checkpoint(tmp_path / "c")
    torch.save({"weights": torch.zeros(2)}, ckpt / STATE)
    with pytest.raises(CheckpointError, match="expected"):
        verify_checkpoint(ckpt)


def test_another_cells_checkpoint_is_refused(tmp_path):
    ckpt = honest_checkpoint(tmp_path / "c")
    with pytest.raises(CheckpointError, match="not of this trial's"):
        verify_checkpoint(ckpt, {**CELL, "rank": 8})


@pytest.mark.parametrize("meta", [b"\xff\xfe\x00garbage", b"[1, 2]", b"{\"config\": 3}",
                                  b"{" * 10 + b"}" * 10, b" " * (1 << 20) + b"{}"])
def test_bad_meta_is_refused(tmp_path, meta):
    ckpt = honest_checkpoint(tmp_path / "c")
    (ckpt / META).write_bytes(meta)
    with pytest.raises(CheckpointError) as err:
        verify_checkpoint(ckpt)
    assert str(ckpt / META) in str(err.value) and len(str(err.value)) < 400
