"""SGD with Nesterov momentum and the paper's multi-step schedules (method.md section 6)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class StageSchedule:
    """Epochs and learning-rate steps of one stage."""

    epochs: int
    lr: float
    milestones: tuple[int, ...] = ()
    gamma: float = 1.0


def role_schedule(schedule: Any, role: str) -> StageSchedule:
    """The teacher's schedule, or the student's: ``student_scale`` of its epochs and milestones.

    Students train half the epochs of their teacher (method.md section 6); the decay points
    scale with them (a (choice): VGG 50/75, WRN 30/60/80).
    """
    scale = 1.0 if role == "teacher" else float(schedule.student_scale)
    return StageSchedule(
        epochs=max(1, round(schedule.epochs * scale)),
        lr=float(schedule.lr),
        milestones=tuple(round(m * scale) for m in schedule.milestones),
        gamma=float(schedule.gamma),
    )


def build_sgd(
    params: Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float
) -> torch.optim.SGD:
    """SGD, Nesterov momentum. Weight decay lives here, so it is the g_WD of method.md 5."""
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, milestones: Sequence[int], gamma: float
) -> torch.optim.lr_scheduler.MultiStepLR:
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
