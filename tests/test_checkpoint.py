"""Checkpoints are atomic, and a bad one is reported, never overwritten."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mhgd.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    state = {"epoch": 3, "weights": torch.arange(5.0), "history": [{"score": 1.5}]}
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3
    assert torch.equal(loaded["weights"], state["weights"])
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left


def test_truncated_checkpoint_is_reported_and_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.randn(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "mv" in str(info.value)
    assert path.read_bytes() == data[: len(data) // 2]


def test_garbage_and_foreign_files_are_rejected(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an mhgd checkpoint"):
        load_checkpoint(foreign)


class Unpicklable:
    """Makes torch.save fail halfway, like a crash or a full disk during a write."""

    def __reduce__(self) -> tuple:
        raise OSError("disk full")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.ones(3)})
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "weights": torch.zeros(3), "bad": Unpicklable()})
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
