"""The distillation-method contract: everything the training loop needs from a method.

A method is an ``nn.Module`` built from the teacher, the student and its config section; its
own trainable parts (e.g. AB's connectors) are submodules, optimised with the student. Per
batch the classifier task calls ``loss_terms`` and then ``backward``, which must leave gradients
in ``.grad``. A method that needs a stage before the student's training (MHGD's MHAN, the
initialisation stage of FSP and AB) lists it in ``pre_stages`` (from its config alone, so a
cluster submission can plan the jobs before any model exists); the pipeline trains the task
from ``pre_stage_task`` and returns its final state through ``load_pre_stage``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mhgd.config.schema import MethodConfig
from mhgd.errors import ConfigError
from mhgd.models.base import SensedModel, SensingPoint
from mhgd.registry import Registry

ModelOutput = tuple[Tensor, list[Tensor]]
# Per-step statistics: 0-dim tensors left on the device. The training loop sums them there and
# reads them once per epoch, so a step never waits for the GPU to finish.
Stats = dict[str, Tensor]
EvalProbe = Callable[[ModelOutput, Tensor], dict[str, Tensor]]
"""(student output, images) of a held-out batch -> per-sample means of evaluation-only
metrics (e.g. MHGD's graph KL to the teacher), averaged over the evaluation set by the task."""


@dataclass(frozen=True)
class PreStage:
    """A stage a method runs before the student's own training.

    ``shared`` stages depend only on the teacher, the data and ``config`` (MHGD's MHAN): they
    are cached and reused by every student and seed. The others depend on the student run
    itself (FSP's and AB's init stage) and live inside its run directory.
    """

    name: str
    shared: bool
    config: Mapping[str, Any]
    epochs: int
    lr: float
    milestones: tuple[int, ...] = ()
    gamma: float = 1.0
    weight_decay: float | None = None  # None: the student's (optim.weight_decay)


class Distiller(nn.Module):
    """Base class and the "none" method: cross-entropy only, no teacher."""

    name: ClassVar[str] = "none"
    Config: ClassVar[type[MethodConfig]] = MethodConfig  # the typed schema of its config section
    requires_teacher: ClassVar[bool] = False
    distils_in_main_stage: ClassVar[bool] = True  # False: the student stage only needs CE
    ce_weight: float = 1.0

    def __init__(self, teacher: SensedModel | None, student: SensedModel, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg

    @classmethod
    def needs_teacher(cls, cfg: Any) -> bool:
        """Whether this configuration distils at all (MHGD with A = 0 does not)."""
        return cls.requires_teacher

    @property
    def uses_teacher(self) -> bool:
        return self.needs_teacher(self.cfg)

    @classmethod
    def describe(cls, cfg: Any) -> dict[str, Any]:
        """The hyper-parameters a report groups by (e.g. MHGD's heads A, MHAN epochs, beta)."""
        return {}

    @classmethod
    def check_pair(
        cls, cfg: Any, teacher: Sequence[SensingPoint], student: Sequence[SensingPoint]
    ) -> None:
        """Raise ConfigError when this teacher/student pair cannot work with this method."""

    @classmethod
    def pre_stages(cls, cfg: Any) -> list[PreStage]:
        return []

    def pre_stage_task(self, stage: PreStage, **runtime: Any) -> Any:
        """The TrainingTask (see mhgd.engine.loop) that trains ``stage``."""
        raise KeyError(f"{type(self).__name__} has no pre-stage {stage.name!r}")

    def load_pre_stage(self, stage: PreStage, task_state: Mapping[str, Any]) -> None:
        """Take over the final state of a trained pre-stage (e.g. the attention heads)."""
        raise KeyError(f"{type(self).__name__} has no pre-stage {stage.name!r}")

    def eval_probe(self) -> EvalProbe | None:
        """What the evaluation measures besides accuracy (None: nothing); see EvalProbe."""
        return None

    def loss_terms(
        self, student_out: ModelOutput, teacher_out: ModelOutput | None, labels: Tensor
    ) -> dict[str, Tensor]:
        """The method's own loss terms on a batch, already weighted (cross-entropy excluded)."""
        return {}

    def backward(
        self, ce: Tensor, terms: Mapping[str, Tensor], params: Sequence[nn.Parameter], epoch: int
    ) -> Stats:
        """Fill ``.grad`` of ``params`` and of this module's own parameters.

        The default adds the losses; MHGD and KD-SVD clip their transfer gradient per tensor
        instead. Returns extra statistics to log (e.g. counts of zeroed gradients), as 0-dim
        tensors on the device.
        """
        total = self.ce_weight * ce
        for term in terms.values():
            total = total + term
        total.backward()
        return {}


METHODS: Registry[type[Distiller]] = Registry(
    "method",
    "mhgd.methods",
    "add mhgd/methods/<name>.py with a @register'ed Distiller subclass (its name and its Config "
    "schema) and mhgd/conf/method/<name>.yaml with its defaults; see README 'Extending'",
)


def register(cls: type[Distiller]) -> type[Distiller]:
    """Class decorator: make a method selectable by its ``name`` in the ``method`` config."""
    return METHODS.add(cls.name, cls)


def method_class(name: str) -> type[Distiller]:
    """The registered method called ``name``; ConfigError lists the choices and how to add one."""
    return METHODS.get(name)


register(Distiller)


def require_same_channels(
    method: str,
    teacher: Sequence[SensingPoint],
    student: Sequence[SensingPoint],
    adapter_hint: bool = False,
) -> None:
    """Feature-based methods compare maps point by point, so the channel lists must agree."""
    t_channels = [p.channels for p in teacher]
    s_channels = [p.channels for p in student]
    if t_channels != s_channels:
        raise ConfigError(
            f"method {method!r} compares teacher and student feature maps at every sensing "
            f"point, but the teacher senses channels {t_channels} and the student "
            f"{s_channels}. Pick a student with the same channels (the paper's pairs: "
            "vgg16/vgg7, wrn22_4 with wrn10_4, resnet, mobilenet or modified_vgg) or give both "
            "models the same `width`"
            + (", or turn on the student adapter (method.adapter=true)." if adapter_hint else ".")
        )


def no_grad_teacher(teacher: SensedModel, images: Tensor) -> ModelOutput:
    """The teacher's forward pass, frozen: no graph, eval-mode batch norm."""
    with torch.no_grad():
        return teacher(images)


def float32_region(like: Tensor) -> AbstractContextManager[Any]:
    """Autocast off on ``like``'s device: a method's own numerics run in the dtype given.

    Under ``runtime.bf16`` the networks run in bf16, but singular vectors, attention logits,
    softmax/KL, kernels and Gram matrices lose too much there (a graph KL came out negative):
    a method casts its inputs to float32 and computes them inside this region.
    """
    return torch.autocast(like.device.type, enabled=False)
