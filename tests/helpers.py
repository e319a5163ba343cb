"""Config composition and tiny-run settings shared by the tests."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from mhgd.config import compose


def compose_config(*overrides: str) -> DictConfig:
    """The config ``mhgd-train`` would see with these command-line overrides."""
    return compose(overrides)


def tiny(tmp_path: Path, *extra: str, epochs: int = 2) -> list[str]:
    """Overrides for a few-second run on the digits data with narrow models."""
    return [
        "dataset=digits",
        "model@teacher=vgg16",
        "model@student=vgg7",
        "teacher.width=0.125",
        "student.width=0.125",
        "teacher.batch_norm=true",
        "student.batch_norm=true",
        "teacher.init=fan_in",  # narrow test networks learn at once with it (fan_out: the paper's)
        "student.init=fan_in",
        f"schedule.epochs={2 * epochs}",
        f"schedule.milestones=[{epochs}]",
        "schedule.lr=0.05",
        "optim.batch_size=64",
        "logger.mode=disabled",
        "runtime.device=cpu",
        "runtime.threads=1",  # tiny models: threads only add overhead, and jobs run side by side
        f"paths.store={tmp_path / 'store'}",
        f"paths.outputs={tmp_path / 'outputs'}",
        *extra,
    ]
