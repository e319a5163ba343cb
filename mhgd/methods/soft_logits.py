"""Soft-logits (Hinton et al. 2015), as the MHGD authors ran it for Tables 1-3 (method.md 9).

The student matches the teacher's class distribution softened by a temperature tau:
KL(p_T^tau || p_S^tau), summed over classes and averaged over the batch, teacher first. The
total is ``ce_weight`` * CE + ``weight`` * KL (0.7 and 0.3, tau 4) in one backward pass. The
authors' code does not multiply the KL term by tau^2 (Hinton's usual gradient rescaling) (code),
so neither does this; raise ``weight`` to get it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from mhgd.config.schema import MethodConfig, bounded
from mhgd.errors import ConfigError
from mhgd.methods.base import Distiller, ModelOutput, float32_region, register
from mhgd.models.base import SensedModel, SensingPoint


def soft_logits_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> Tensor:
    """KL(softmax(t / tau) || softmax(s / tau)): per sample over classes, then the batch mean."""
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            "student and teacher logits must both have shape (N, classes), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if not tau > 0:
        raise ValueError(f"the temperature tau must be > 0, got {tau}")
    with float32_region(student_logits):
        log_student = F.log_softmax(student_logits.float() / tau, dim=1)
        log_teacher = F.log_softmax(teacher_logits.float() / tau, dim=1)
        return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)


@dataclass
class SoftLogitsConfig(MethodConfig):
    name: str = "soft_logits"
    tau: float = bounded(4.0, gt=0)
    weight: float = bounded(0.3, ge=0)
    ce_weight: float = bounded(0.7, ge=0)


@register
class SoftLogits(Distiller):
    """Cross-entropy and the softened teacher distribution, weighted and added."""

    name = "soft_logits"
    Config = SoftLogitsConfig
    requires_teacher = True

    def __init__(self, teacher: SensedModel | None, student: SensedModel, cfg: Any) -> None:
        super().__init__(teacher, student, cfg)
        self._check_weights(cfg)
        self.tau, self.weight = float(cfg.tau), float(cfg.weight)
        self.ce_weight = float(cfg.ce_weight)

    @staticmethod
    def _check_weights(cfg: Any) -> None:
        if not float(cfg.tau) > 0:
            raise ConfigError(f"method.tau (the temperature) must be > 0, got {cfg.tau}")
        for key in ("weight", "ce_weight"):
            if float(cfg[key]) < 0:
                raise ConfigError(f"method.{key} must be >= 0, got {cfg[key]}")

    @classmethod
    def describe(cls, cfg: Any) -> dict[str, Any]:
        return {
            "tau": float(cfg.tau),
            "weight": float(cfg.weight),
            "ce_weight": float(cfg.ce_weight),
        }

    @classmethod
    def check_pair(
        cls, cfg: Any, teacher: Sequence[SensingPoint], student: Sequence[SensingPoint]
    ) -> None:
        cls._check_weights(cfg)

    def loss_terms(
        self, student_out: ModelOutput, teacher_out: ModelOutput | None, labels: Tensor
    ) -> dict[str, Tensor]:
        if teacher_out is None:
            raise ValueError("soft_logits needs the teacher's logits; none were given")
        return {"kd": self.weight * soft_logits_loss(student_out[0], teacher_out[0], self.tau)}
