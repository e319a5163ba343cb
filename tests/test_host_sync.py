"""A training step reads nothing back from the device (issue 11 item 2).

On a GPU every read of a tensor's value on the host (``.item()``, ``.tolist()``, ``bool()``,
``float()``, ...) waits for the queue to drain. CPU tensors have no queue, but the same Python
calls happen, so counting them here shows what a GPU would stall on. Each training setup runs
one epoch of ``fit`` with 2 and then with 4 batches: the reads of an epoch (its statistics,
the divergence check, the evaluation) are the same, so any read per step shows as a
difference; the reads inside the steps themselves are counted too and must be zero.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

from mhgd.engine.loop import LoopSettings, fit
from mhgd.engine.optim import StageSchedule
from mhgd.engine.tasks import ClassifierTask
from mhgd.methods import MHGD, method_class
from tests.test_compared_methods import method_cfg, pair

TENSOR_READS = ["item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"]
TENSOR_READS += ["__array__", "__format__"]
TORCH_READS = ["equal", "allclose", "is_nonzero"]


class ReadCounter:
    """Counts host reads of tensor values while installed."""

    def __init__(self) -> None:
        self.count = 0
        self.where: list[str] = []

    def _wrap(self, name: str, original: Callable) -> Callable:
        @functools.wraps(original)
        def counted(*args, **kwargs):
            self.count += 1
            self.where.append(name)
            return original(*args, **kwargs)

        return counted

    @contextlib.contextmanager
    def installed(self) -> Iterator[ReadCounter]:
        with pytest.MonkeyPatch.context() as patch:
            for name in TENSOR_READS:
                patch.setattr(Tensor, name, self._wrap(name, getattr(Tensor, name)))
            for name in TORCH_READS:
                patch.setattr(torch, name, self._wrap(name, getattr(torch, name)))
            yield self


def images_and_labels(n: int, seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=generator) - 0.5, torch.arange(n) % 10


def classifier_task(name: str, bf16: bool = False) -> ClassifierTask:
    teacher, student = pair()
    method = method_class(name)(teacher if name != "none" else None, student, method_cfg(name))
    if name == "mhgd":
        (stage,) = MHGD.pre_stages(method.cfg)
        method.load_pre_stage(stage, method.pre_stage_task(stage).state_dict())
    autocast = torch.bfloat16 if bf16 else None
    return ClassifierTask(student, method, teacher if name != "none" else None, autocast=autocast)


def pre_stage_task(name: str):
    teacher, student = pair()
    method = method_class(name)(teacher, student, method_cfg(name))
    (stage,) = type(method).pre_stages(method.cfg)
    return method.pre_stage_task(stage)


SETUPS = {
    "none": lambda: classifier_task("none"),
    "mhgd": lambda: classifier_task("mhgd"),
    "mhgd-bf16": lambda: classifier_task("mhgd", bf16=True),
    "soft_logits": lambda: classifier_task("soft_logits"),
    "kdsvd": lambda: classifier_task("kdsvd"),
    "kdsvdf": lambda: classifier_task("kdsvdf"),
    "mhan-stage": lambda: pre_stage_task("mhgd"),
    "fsp-init": lambda: pre_stage_task("fsp"),
    "ab-init": lambda: pre_stage_task("ab"),
}


def reads_of_an_epoch(make_task: Callable, batches: int, tmp_path: Path) -> tuple[int, int, list]:
    """(reads in the whole epoch, reads inside the training steps, where they were)."""
    task = make_task()
    data = [images_and_labels(8, seed) for seed in range(batches)]
    counter = ReadCounter()
    in_steps = ReadCounter()
    step = task.train_step

    def counted_step(*args, **kwargs):
        before = counter.count
        stats = step(*args, **kwargs)
        in_steps.count += counter.count - before
        in_steps.where += counter.where[before:]
        return stats

    task.train_step = counted_step
    with counter.installed():
        fit(
            task,
            schedule=StageSchedule(epochs=1, lr=0.01),
            train_batches=lambda epoch: iter(data),
            eval_batches=lambda: [images_and_labels(4, 99)],
            checkpoint=tmp_path / f"{batches}" / "checkpoint.pt",
            settings=LoopSettings(progress=False),
        )
    return counter.count, in_steps.count, in_steps.where


@pytest.mark.parametrize("setup", list(SETUPS))
def test_a_training_step_reads_nothing_back_from_the_device(setup: str, tmp_path: Path) -> None:
    short, short_in_steps, where = reads_of_an_epoch(SETUPS[setup], 2, tmp_path)
    long, long_in_steps, long_where = reads_of_an_epoch(SETUPS[setup], 4, tmp_path)
    assert (short_in_steps, long_in_steps) == (0, 0), where + long_where
    assert long == short  # the epoch's reads do not grow with its number of steps
    assert short > 0  # the epoch's statistics are read once: the counter sees real reads


def test_the_counter_sees_each_kind_of_read() -> None:
    counter = ReadCounter()
    value = torch.tensor(1.5)
    with counter.installed():
        value.item()
        value.tolist()
        bool(value)
        float(value)
        int(value)
        f"{value:.1f}"
        torch.equal(value, value)
    assert {"item", "tolist", "__bool__", "__float__", "__int__", "__format__", "equal"} <= set(
        counter.where
    )
