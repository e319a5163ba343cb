"""A diverged run stops as failed, in every stage and method (issue 10 item 1b).

The loop reads its statistics and a weight check once per epoch (no read per step, see
tests/test_host_sync.py); a non-finite loss or a non-finite weight then raises ``Diverged``,
which says where, and the diverged epoch is never checkpointed. Each task is forced to diverge
by its learning rate: 1e12 makes the loss overflow within a few steps; an infinite one turns the
weights non-finite after a single step whose loss was still finite.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mhgd.engine.checkpoint import load_checkpoint
from mhgd.engine.loop import Diverged, LoopSettings, fit
from mhgd.engine.optim import StageSchedule
from mhgd.pipeline import run
from mhgd.records import RunDir
from tests.helpers import compose_config, tiny
from tests.test_host_sync import SETUPS, images_and_labels

TASKS = ["none", "mhgd", "kdsvd", "soft_logits", "mhan-stage", "fsp-init", "ab-init"]


def fit_with(make_task: Callable, lr: float, batches: int, epochs: int, run_dir: Path) -> None:
    data = [images_and_labels(16, seed) for seed in range(batches)]
    fit(
        make_task(),
        schedule=StageSchedule(epochs=epochs, lr=lr),
        train_batches=lambda epoch: iter(data),
        eval_batches=lambda: [images_and_labels(8, 99)],
        checkpoint=run_dir / "checkpoint.pt",
        settings=LoopSettings(progress=False),
    )


@pytest.mark.parametrize("setup", TASKS)
def test_an_exploding_loss_stops_the_run_with_where(setup: str, tmp_path: Path) -> None:
    run_dir = tmp_path / f"{setup}-run"
    with pytest.raises(Diverged, match=r"diverged in epoch 1/3 of " + f"{setup}-run") as raised:
        fit_with(SETUPS[setup], lr=1e12, batches=6, epochs=3, run_dir=run_dir)
    assert raised.value.run_status == "failed"
    assert "non-finite" in str(raised.value)
    assert not (run_dir / "checkpoint.pt").exists()  # the diverged epoch is not saved


@pytest.mark.parametrize("setup", ["none", "mhan-stage", "fsp-init"])
def test_non_finite_weights_stop_the_run_even_when_the_loss_was_finite(
    setup: str, tmp_path: Path
) -> None:
    # One step per epoch: its loss comes from the healthy weights; the infinite step after it
    # leaves them non-finite, which only the weight check sees.
    with pytest.raises(Diverged, match="non-finite weights"):
        fit_with(SETUPS[setup], lr=float("inf"), batches=1, epochs=2, run_dir=tmp_path)


def test_a_healthy_epoch_before_the_divergence_stays_the_last_checkpoint(tmp_path: Path) -> None:
    # A bad schedule: the learning rate jumps from 0.01 to 1e12 after epoch 1.
    data = [images_and_labels(16, seed) for seed in range(4)]
    with pytest.raises(Diverged, match="epoch 2/3"):
        fit(
            SETUPS["none"](),
            schedule=StageSchedule(epochs=3, lr=0.01, milestones=(1,), gamma=1e14),
            train_batches=lambda epoch: iter(data),
            eval_batches=lambda: [images_and_labels(8, 99)],
            checkpoint=tmp_path / "checkpoint.pt",
            settings=LoopSettings(progress=False),
        )
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert all(torch.isfinite(v).all() for v in state["task"]["model"].values())


@pytest.mark.slow
def test_a_diverged_teacher_is_recorded_as_failed(tmp_path: Path) -> None:
    overrides = tiny(tmp_path, "stage=teacher", "schedule.lr=1e12", epochs=1)
    with pytest.raises(Diverged):
        run(compose_config(*overrides), tmp_path / "teacher")
    result = RunDir(tmp_path / "teacher").read_result()
    assert result.status == "failed"
    assert "diverged in epoch 1/2" in result.error
