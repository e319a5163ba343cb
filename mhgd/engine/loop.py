"""The epoch loop: generic over what is trained, resumable to the exact same weights.

The loop knows nothing about distillation. It drives a ``TrainingTask`` (a classifier with or
without a method, MHGD's MHAN, ...) with SGD and a multi-step schedule, evaluates every epoch,
and checkpoints after every epoch and on preemption. All randomness of an epoch comes from a
generator seeded by (seed, epoch) and from torch's global generator, whose state is saved, so
a run stopped anywhere and resumed ends bitwise equal to an uninterrupted one on CPU.

A step never reads a value back from the device: the statistics a task returns are summed on
the device and read once per epoch (and, with a progress bar, once per ``POSTFIX_INTERVAL_S``).
The same single read tells whether the run diverged: a non-finite statistic (the loss among
them) or a non-finite weight stops the run with ``Diverged`` before the epoch is checkpointed.
"""

from __future__ import annotations

import logging
import math
import operator
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


# How often a shown progress bar reads the running losses back from the device.
POSTFIX_INTERVAL_S = 5.0


class Diverged(RuntimeError):
    """The loss or the weights became NaN/inf: the run failed and its state is not saved."""

    run_status = "failed"  # how the pipeline records the run


class TrainingTask(Protocol):
    """What the loop trains. ``evaluate`` must return ``score_name`` (higher is better).

    ``train_step`` returns its statistics as 0-dim tensors (or floats) and must not read them
    back: the loop does, once per epoch. A task may name, in ``summary_keys``, the statistics
    shown in the progress bar and the epoch line (by default all of them).
    """

    score_name: str

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def train_mode(self) -> None: ...

    def train_step(self, images: Tensor, labels: Tensor, epoch: int) -> dict[str, Any]:
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


Sums = dict[str, Any]  # per key: a float, or a float64 tensor on the training device


def _accumulate(sums: Sums, stats: dict[str, Any]) -> None:
    for key, value in stats.items():
        value = value.detach().double() if isinstance(value, Tensor) else float(value)
        sums[key] = sums[key] + value if key in sums else value


def _read(sums: Sums, params: list[nn.Parameter] | None = None) -> tuple[dict[str, float], bool]:
    """The sums as floats and whether ``params`` are all finite: one device-to-host read."""
    on_device = [k for k, v in sums.items() if isinstance(v, Tensor)]
    checks = [torch.stack([torch.isfinite(p).all() for p in params]).all()] if params else []
    values = [sums[k].reshape(()) for k in on_device] + [c.double() for c in checks]
    read = torch.stack(values).tolist() if values else []
    plain = {k: float(v) for k, v in sums.items() if not isinstance(v, Tensor)}
    plain.update(zip(on_device, read[: len(on_device)], strict=True))
    finite_weights = bool(read[-1]) if checks else True
    return {k: plain[k] for k in sums}, finite_weights


def _mean(sums: dict[str, float], count: int) -> dict[str, float]:
    return {k: v / max(count, 1) for k, v in sums.items()}


def _summary(task: TrainingTask, means: dict[str, float]) -> str:
    keys = getattr(task, "summary_keys", None) or list(means)
    return "  ".join(f"{k} {means[k]:.4g}" for k in keys if k in means)


def _length(batches: Any, fallback: int | None) -> int | None:
    """The epoch's number of batches if the iterable tells, else the last epoch's."""
    hint = operator.length_hint(batches, 0)
    return hint if hint > 0 else fallback


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

    ``train_batches(epoch)`` must yield the same batches for the same epoch every time; an
    iterable with a length gives the progress bar its total from the first epoch (otherwise
    it has one from the second). Raises ``Diverged`` at the end of an epoch in which the
    statistics or the weights became non-finite.
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
    start_epoch, skip_batches, seen = 0, 0, 0
    sums: Sums = {}
    batches_per_epoch: int | None = None

    if checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        task.load_state_dict(state["task"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        history, best_score, best_epoch = state["history"], state["best_score"], state["best_epoch"]
        start_epoch, skip_batches = state["epoch"], state["batch"]
        sums, seen = state["partial_sums"], state["partial_count"]
        batches_per_epoch = state.get("batches_per_epoch")
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
                "batches_per_epoch": batches_per_epoch,
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
    params = task.trainable_parameters()
    where = f"{checkpoint.parent.name} ({checkpoint.parent})"
    for epoch in range(start_epoch, schedule.epochs):
        started = time.perf_counter()
        task.train_mode()
        batches = train_batches(epoch)
        bar = tqdm(
            batches,
            desc=f"epoch {epoch + 1}/{schedule.epochs}",
            total=_length(batches, batches_per_epoch),
            disable=not show_bar,
            leave=False,
        )
        shown = time.monotonic()
        index = -1
        for index, (images, labels) in enumerate(bar):
            if index < skip_batches:
                continue  # already trained before the interruption
            optimizer.zero_grad(set_to_none=True)
            stats = task.train_step(images, labels, epoch)
            optimizer.step()
            _accumulate(sums, stats)
            seen += 1
            if show_bar and time.monotonic() - shown >= POSTFIX_INTERVAL_S:
                bar.set_postfix_str(_summary(task, _mean(_read(sums)[0], seen)), refresh=False)
                shown = time.monotonic()
            if stop is not None and stop.pending:
                sums = _read(sums)[0]  # the checkpoint holds plain floats
                save(epoch, index + 1)
                raise Preempted(stop.signum)
        batches_per_epoch = index + 1
        skip_batches = 0
        totals, finite_weights = _read(sums, params)
        means = _mean(totals, seen)
        bad = sorted(k for k, v in means.items() if not math.isfinite(v))
        if bad or not finite_weights:
            what = f"non-finite {', '.join(bad)}" if bad else "non-finite weights"
            raise Diverged(
                f"training diverged in epoch {epoch + 1}/{schedule.epochs} of {where}: {what} "
                "(the last healthy checkpoint is the previous epoch's); lower the learning rate "
                "or check the inputs"
            )
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        evaluated = task.evaluate(eval_batches())
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "score": evaluated[task.score_name]}
        row.update({f"train/{k}": v for k, v in means.items()})
        row.update({f"eval/{k}": v for k, v in evaluated.items()})
        row["time_s"] = time.perf_counter() - started
        history.append(row)
        if best_score is None or row["score"] > best_score:
            best_score, best_epoch = row["score"], epoch + 1
        sums, seen = {}, 0
        save(epoch + 1, 0)
        log.info(
            "epoch %d/%d  %s %.4f  (best %.4f @ %d)  train: %s  lr %.4g  %.1fs",
            epoch + 1,
            schedule.epochs,
            task.score_name,
            row["score"],
            best_score,
            best_epoch,
            _summary(task, means),
            lr,
            row["time_s"],
        )
        if on_epoch is not None:
            on_epoch(history)
        if stop is not None and stop.pending:
            raise Preempted(stop.signum)
    return FitOutcome(history, best_score, best_epoch, resumed_from)
