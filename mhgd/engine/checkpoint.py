"""Atomic checkpoints: a crash or a kill at any moment leaves the last good checkpoint intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mhgd.files import atomic_file


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used; it is left untouched for the user to inspect."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash or a kill mid-write leaves the previous checkpoint intact."""
    with atomic_file(Path(path), "wb") as handle:
        torch.save(state, handle)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint``, or explain why it cannot be used."""
    target = Path(path)
    try:
        state = torch.load(target, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"the checkpoint {target} is unreadable ({type(exc).__name__}: {exc}). It was left "
            "in place. It is truncated or corrupt (a copy interrupted, a full disk?). Restore it "
            f"from a backup, or move it away (e.g. `mv {target} {target}.bad`) to restart this "
            "run from scratch."
        ) from exc
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(
            f"{target} is not an mhgd checkpoint (no 'epoch' entry). Move it away to restart "
            "this run from scratch."
        )
    return state
