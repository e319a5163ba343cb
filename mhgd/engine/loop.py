"""The epoch loop: generic over what is trained, resumable to the exact same weights.

The loop knows nothing about distillation. It drives a ``TrainingTask`` (a classifier with or
without a method, MHGD's MHAN, ...) with SGD and a multi-step schedule, evaluates every epoch,
and checkpoints after every epoch and on preemption. All randomness of an epoch comes from a
generator seeded by (seed, epoch) and from torch's global generator, whose state is saved, so
a run stopped anywhere and resumed ends bitwise equal to an uninterrupted one on CPU.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mhgd.engine.checkpoint import load_checkpoint, save_checkpoint
from mhgd.engine.optim import StageSchedule, build_scheduler, build_sgd
from mhgd.engine.preemption import Preempted, StopRequest

log = logging.getLogger(__name__)

Batches = Iterable[tuple[Tensor, Tensor]]


class TrainingTask(Protocol):
    """What the loop trains. ``evaluate`` must return ``score_name`` (higher is better)."""

    score_name: str

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def train_mode(self) -> None: ...

    def train_step(self, images: Tensor, labels: Tensor, epoch: int) -> dict[str, float]:
        """Forward and backward on one batch: leaves gradients in ``.grad``."""
        ...

    def evaluate(self, batches: Batches) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class LoopSettings:
    momentum: float = 0.9
    weight_decay: float = 5e-4
    progress: bool | None = None  # None: a bar only when stderr is a terminal


@dataclass
class FitOutcome:
    history: list[dict[str, Any]]
    best_score: float | None
    best_epoch: int | None
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def last_score(self) -> float | None:
        return self.history[-1]["score"] if self.history else None


EpochHook = Callable[[list[dict[str, Any]]], None]


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _mean(sums: dict[str, float], count: int) -> dict[str, float]:
    return {k: v / max(count, 1) for k, v in sums.items()}


def fit(
    task: TrainingTask,
    *,
    schedule: StageSchedule,
    train_batches: Callable[[int], Iterator[tuple[Tensor, Tensor]]],
    eval_batches: Callable[[], Batches],
    checkpoint: Path,
    settings: LoopSettings,
    stop: StopRequest | None = None,
    on_epoch: EpochHook | None = None,
) -> FitOutcome:
    """Train ``task`` for ``schedule.epochs`` epochs, resuming from ``checkpoint`` if present.

    ``train_batches(epoch)`` must yield the same batches for the same epoch every time.
    ``on_epoch`` receives the history (one row per finished epoch, the newest last) after each
    epoch is checkpointed; it may raise to stop training (a sweep's pruner does).
    """
    optimizer = build_sgd(
        task.trainable_parameters(), schedule.lr, settings.momentum, settings.weight_decay
    )
    scheduler = build_scheduler(optimizer, schedule.milestones, schedule.gamma)
    history: list[dict[str, Any]] = []
    best_score: float | None = None
    best_epoch: int | None = None
    start_epoch, skip_batches, sums, seen = 0, 0, {}, 0

    if checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        task.load_state_dict(state["task"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        history, best_score, best_epoch = state["history"], state["best_score"], state["best_epoch"]
        start_epoch, skip_batches = state["epoch"], state["batch"]
        sums, seen = state["partial_sums"], state["partial_count"]
        log.info("resumed from %s at epoch %d, batch %d", checkpoint, start_epoch, skip_batches)
    resumed_from = start_epoch

    def save(epoch: int, batch: int) -> None:
        save_checkpoint(
            checkpoint,
            {
                "epoch": epoch,
                "batch": batch,
                "partial_sums": sums,
                "partial_count": seen,
                "task": task.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "history": history,
                "best_score": best_score,
                "best_epoch": best_epoch,
            },
        )

    show_bar = sys.stderr.isatty() if settings.progress is None else settings.progress
    for epoch in range(start_epoch, schedule.epochs):
        started = time.perf_counter()
        task.train_mode()
        batches = train_batches(epoch)
        bar = tqdm(
            batches, desc=f"epoch {epoch + 1}/{schedule.epochs}", disable=not show_bar, leave=False
        )
        for index, (images, labels) in enumerate(bar):
            if index < skip_batches:
                continue  # already trained before the interruption
            optimizer.zero_grad(set_to_none=True)
            stats = task.train_step(images, labels, epoch)
            optimizer.step()
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            seen += 1
            if stop is not None and stop.pending:
                save(epoch, index + 1)
                raise Preempted(stop.signum)
        skip_batches = 0
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        evaluated = task.evaluate(eval_batches())
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "score": evaluated[task.score_name]}
        row.update({f"train/{k}": v for k, v in _mean(sums, seen).items()})
        row.update({f"eval/{k}": v for k, v in evaluated.items()})
        row["time_s"] = time.perf_counter() - started
        history.append(row)
        if best_score is None or row["score"] > best_score:
            best_score, best_epoch = row["score"], epoch + 1
        sums, seen = {}, 0
        save(epoch + 1, 0)
        log.info(
            "epoch %d/%d  %s %.4f  (best %.4f @ %d)  %.1fs",
            epoch + 1,
            schedule.epochs,
            task.score_name,
            row["score"],
            best_score,
            best_epoch,
            row["time_s"],
        )
        if on_epoch is not None:
            on_epoch(history)
        if stop is not None and stop.pending:
            raise Preempted(stop.signum)
    return FitOutcome(history, best_score, best_epoch, resumed_from)
