"""The paper's learning-rate schedules (method.md section 6), at their boundaries."""

from __future__ import annotations

import pytest
import torch

from mhgd.engine.optim import StageSchedule, build_scheduler, build_sgd, role_schedule
from tests.helpers import compose_config


def lrs_per_epoch(schedule: StageSchedule) -> list[float]:
    """The lr the real optimiser uses in each epoch, stepping the real scheduler."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_sgd([param], schedule.lr, momentum=0.9, weight_decay=5e-4)
    scheduler = build_scheduler(optimizer, schedule.milestones, schedule.gamma)
    seen = []
    for _ in range(schedule.epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize(
    ("group", "role", "epochs", "expected"),
    [
        (
            "vgg",
            "teacher",
            200,
            {0: 0.01, 99: 0.01, 100: 0.001, 149: 0.001, 150: 0.0001, 199: 0.0001},
        ),
        ("vgg", "student", 100, {0: 0.01, 49: 0.01, 50: 0.001, 74: 0.001, 75: 0.0001, 99: 0.0001}),
        (
            "wrn",
            "teacher",
            200,
            {
                0: 0.1,
                59: 0.1,
                60: 0.02,
                119: 0.02,
                120: 0.004,
                159: 0.004,
                160: 0.0008,
                199: 0.0008,
            },
        ),
        (
            "wrn",
            "student",
            100,
            {0: 0.1, 29: 0.1, 30: 0.02, 59: 0.02, 60: 0.004, 79: 0.004, 80: 0.0008, 99: 0.0008},
        ),
    ],
)
def test_schedule_boundaries(
    group: str, role: str, epochs: int, expected: dict[int, float]
) -> None:
    schedule = role_schedule(compose_config(f"schedule={group}").schedule, role)
    assert schedule.epochs == epochs
    seen = lrs_per_epoch(schedule)
    for epoch, lr in expected.items():
        assert seen[epoch] == pytest.approx(lr, rel=1e-9), epoch


def test_optimiser_is_nesterov_sgd_with_weight_decay() -> None:
    optimizer = build_sgd([torch.nn.Parameter(torch.zeros(1))], 0.1, 0.9, 5e-4)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 5e-4)
