"""``runtime.compile=true``: the networks run through torch.compile (issue 11 item 3).

The compiled networks share their parameters with the plain modules, so checkpoints hold the
plain modules' state (loadable without compiling) and a compiled run resumes exactly. MHGD,
which takes two gradients through the student (its clipping), keeps its contract: the same
loss and gradients as without compiling, to float32 rounding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mhgd.engine.checkpoint import load_checkpoint
from mhgd.engine.loop import LoopSettings, fit
from mhgd.engine.optim import StageSchedule
from mhgd.engine.tasks import ClassifierTask
from mhgd.methods import MHGD
from tests.test_compared_methods import method_cfg, pair
from tests.test_host_sync import images_and_labels

pytestmark = pytest.mark.slow


def mhgd_task(compile: bool) -> ClassifierTask:
    teacher, student = pair()
    method = MHGD(teacher, student, method_cfg("mhgd", **{"heads": 2}))
    (stage,) = MHGD.pre_stages(method.cfg)
    method.load_pre_stage(stage, method.pre_stage_task(stage).state_dict())
    return ClassifierTask(student, method, teacher, compile=compile)


def train(task: ClassifierTask, epochs: int, checkpoint: Path) -> None:
    data = [images_and_labels(8, seed) for seed in range(2)]
    fit(
        task,
        schedule=StageSchedule(epochs=epochs, lr=0.01),
        train_batches=lambda epoch: iter(data),
        eval_batches=lambda: [images_and_labels(8, 99)],
        checkpoint=checkpoint,
        settings=LoopSettings(progress=False),
    )


def test_compiled_mhgd_matches_eager_and_resumes_exactly(tmp_path: Path) -> None:
    images, labels = images_and_labels(8, 0)
    grads = {}
    for compile in (False, True):
        task = mhgd_task(compile)
        task.train_mode()
        stats = task.train_step(images, labels, epoch=1)
        assert float(stats["transfer"]) > 0
        grads[compile] = [p.grad.clone() for p in task.model.parameters()]
    for eager, compiled in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-5)

    train(mhgd_task(True), 2, tmp_path / "straight.pt")
    train(mhgd_task(True), 1, tmp_path / "resumed.pt")
    train(mhgd_task(True), 2, tmp_path / "resumed.pt")  # a new process would do the same
    straight = load_checkpoint(tmp_path / "straight.pt")["task"]["model"]
    resumed = load_checkpoint(tmp_path / "resumed.pt")["task"]["model"]
    assert straight.keys() == mhgd_task(False).model.state_dict().keys()  # no compile prefix
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key
