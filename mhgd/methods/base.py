"""The distillation-method contract: everything the training loop needs from a method.

A method is an ``nn.Module`` (its own trainable parts, e.g. AB's connectors, are submodules and
are optimised with the student) built from the teacher, the student and its config section. The
loop calls, per batch: the student (and teacher) forward, ``loss_terms``, then ``backward``, which
must leave gradients in ``.grad`` of every trained parameter. Methods that need a stage before the
student's own training (MHGD's MHAN, the initialisation-type methods' init stage) declare it in
``pre_stages``; the pipeline runs those and hands their result back through ``load_pre_stage``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mhgd.models.base import SensedModel

ModelOutput = tuple[Tensor, list[Tensor]]


@dataclass(frozen=True)
class PreStage:
    """A stage a method runs before the student's training.

    ``shared`` stages depend only on the teacher and the method config (MHGD's MHAN) and are
    cached across students and seeds; the others depend on the student run itself (the init
    stage of FSP and AB) and live inside the student's run directory. ``config`` is what
    identifies the stage's artifact (hashed with its inputs), ``build_task`` makes the training
    task the generic loop runs, and ``epochs``/``lr``/``milestones`` its schedule.
    """

    name: str
    shared: bool
    config: dict[str, Any]
    epochs: int
    lr: float
    milestones: Sequence[int] = ()
    gamma: float = 1.0
    build_task: Callable[..., Any] = field(default=None, repr=False)  # type: ignore[assignment]


class Distiller(nn.Module):
    """Base class: plain cross-entropy training, no teacher. Methods override what differs."""

    name: ClassVar[str] = "none"
    requires_teacher: ClassVar[bool] = False
    ce_weight: float = 1.0

    def __init__(self, teacher: SensedModel | None, student: SensedModel, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg

    def pre_stages(self) -> list[PreStage]:
        return []

    def load_pre_stage(self, name: str, state: dict[str, Any]) -> None:
        """Take the result of a finished pre-stage (e.g. the trained attention heads)."""
        raise KeyError(f"{type(self).__name__} has no pre-stage named {name!r}")

    def loss_terms(
        self, student_out: ModelOutput, teacher_out: ModelOutput | None, labels: Tensor
    ) -> dict[str, Tensor]:
        """The method's own loss terms on a batch, already weighted (cross-entropy excluded)."""
        return {}

    def backward(
        self, ce: Tensor, terms: dict[str, Tensor], params: Sequence[nn.Parameter], epoch: int
    ) -> dict[str, float]:
        """Fill ``.grad`` of ``params`` (and of this module's own parameters).

        The default adds the losses; MHGD and KD-SVD override it to clip their transfer
        gradient per tensor. Returns extra scalars to log (e.g. counts of zeroed gradients).
        """
        total = self.ce_weight * ce
        for term in terms.values():
            total = total + term
        total.backward()
        return {}


METHODS: dict[str, type[Distiller]] = {"none": Distiller}


def register(cls: type[Distiller]) -> type[Distiller]:
    """Class decorator: make a method selectable by its ``name`` from the ``method`` config."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def no_grad_teacher(teacher: SensedModel, images: Tensor) -> ModelOutput:
    """The teacher's forward pass, frozen: no graph, eval-mode batch norm."""
    with torch.no_grad():
        return teacher(images)
