"""Initialisation-type distillation (FSP, AB; method.md section 9): distil first, then classify.

The authors' schedule (code): an "init" stage trains the student, and the method's own modules
(AB's connectors), on the distillation loss alone for ``method.init.epochs`` (40) at the
student's learning rate held constant; then the student's normal training runs on cross-entropy
alone, from the initialised weights, with a fresh optimiser (the authors reset the momentum).
In the init stage only the tensors the distillation loss reaches get a gradient and weight
decay; the layers after the last sensing point (the classifier) stay as initialised, as in the
authors' optimiser, which adds weight decay only to tensors with a distillation gradient.

The init stage lives in the student's run directory (run_dir/init/), with its own run record
and W&B run. Its score is the negative distillation loss on the evaluation data (higher is
better); the student's top-1 there is logged too, but the classifier is untrained.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mhgd.config.schema import bounded
from mhgd.errors import ConfigError
from mhgd.methods.base import Distiller, ModelOutput, PreStage, Stats, no_grad_teacher
from mhgd.models.base import SensedModel

INIT_STAGE = "init"


@dataclass
class InitConfig:
    """``method.init``: epochs on the distillation loss alone, at a constant learning rate."""

    epochs: int = bounded(40, ge=1)
    lr: float = bounded(0.01, gt=0)


class InitialisationDistiller(Distiller, ABC):
    """Base of the initialisation-type methods: subclasses define ``distillation_loss``.

    The main (student) stage adds no loss term: cross-entropy alone.
    """

    requires_teacher = True
    distils_in_main_stage = False

    def __init__(self, teacher: SensedModel | None, student: SensedModel, cfg: Any) -> None:
        super().__init__(teacher, student, cfg)
        if teacher is None:
            raise ValueError(f"method {self.name!r} needs a teacher, none was given")
        # References, not submodules: the networks' weights are not the method's state.
        self._networks = (teacher, student)

    @property
    def teacher(self) -> SensedModel:
        return self._networks[0]

    @property
    def student(self) -> SensedModel:
        return self._networks[1]

    @abstractmethod
    def distillation_loss(
        self, student_maps: Sequence[Tensor], teacher_maps: Sequence[Tensor]
    ) -> Tensor:
        """The weighted distillation loss on the sensed maps of a batch (a scalar)."""

    @classmethod
    def check_init(cls, cfg: Any) -> None:
        epochs, lr = cfg.init.epochs, float(cfg.init.lr)
        if not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(
                f"method.init.epochs must be a positive integer (the paper's code uses 40), "
                f"got {epochs!r}; for a student without distillation use method=none"
            )
        if not lr > 0:
            raise ConfigError(f"method.init.lr must be > 0 (default: schedule.lr), got {lr}")

    @classmethod
    def pre_stages(cls, cfg: Any) -> list[PreStage]:
        cls.check_init(cfg)
        return [
            PreStage(
                name=INIT_STAGE,
                shared=False,
                config={"method": cls.name, **cls.describe(cfg)},
                epochs=int(cfg.init.epochs),
                lr=float(cfg.init.lr),
            )
        ]

    def pre_stage_task(self, stage: PreStage, **runtime: Any) -> InitTask:
        if stage.name != INIT_STAGE:
            return super().pre_stage_task(stage)
        self.requires_grad_(True)  # the method's own modules (AB's connectors) learn here
        return InitTask(self)

    def load_pre_stage(self, stage: PreStage, task_state: Mapping[str, Any]) -> None:
        if stage.name != INIT_STAGE:
            super().load_pre_stage(stage, task_state)
        self.student.load_state_dict(task_state["model"])
        self.load_state_dict(task_state["method"])
        self.requires_grad_(False)  # the main stage trains the student on cross-entropy alone

    def loss_terms(
        self, student_out: ModelOutput, teacher_out: ModelOutput | None, labels: Tensor
    ) -> dict[str, Tensor]:
        return {}


class InitTask:
    """The init stage as a TrainingTask (mhgd.engine.loop): the distillation loss alone."""

    score_name = "neg_distill"
    summary_keys = ("distill",)

    def __init__(self, method: InitialisationDistiller) -> None:
        self.method = method

    def trainable_parameters(self) -> list[nn.Parameter]:
        own = [p for p in self.method.parameters() if p.requires_grad]
        return [*self.method.student.parameters(), *own]

    def train_mode(self) -> None:
        self.method.student.train()
        self.method.train()
        self.method.teacher.eval()

    def _loss(self, images: Tensor) -> tuple[Tensor, Tensor]:
        logits, student_maps = self.method.student(images)
        teacher_maps = no_grad_teacher(self.method.teacher, images)[1]
        return self.method.distillation_loss(student_maps, teacher_maps), logits

    def train_step(self, images: Tensor, labels: Tensor, epoch: int) -> Stats:
        loss, _ = self._loss(images)
        loss.backward()
        return {"distill": loss.detach()}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        self.method.student.eval()
        self.method.eval()
        sums: Tensor | float = 0.0  # [loss * n, correct] on the device, read once
        count = 0
        for images, labels in batches:
            loss, logits = self._loss(images)
            correct = (logits.argmax(1) == labels).sum()
            sums = sums + torch.stack([loss.double() * labels.numel(), correct.double()])
            count += labels.numel()
        loss_sum, correct = torch.as_tensor(sums).tolist()
        mean = loss_sum / count
        return {"distill": mean, "neg_distill": -mean, "top1": 100.0 * correct / count}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.method.student.state_dict(), "method": self.method.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.student.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
