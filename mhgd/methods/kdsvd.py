"""KD-SVD (Lee et al. 2018), as the MHGD authors ran it for Tables 1-3 (method.md section 9).

Each sensed map is compressed as MHGD's (method.md section 2, mhgd.methods.svd): the teacher's
top right singular vector per sample, and the student's best aligned one of its top k = 4. Between
consecutive points (front F, back B) an RBF kernel relates every (back channel, front channel)
pair of a sample, K[n, b, f] = exp(-(v^B[n, b] - v^F[n, f])^2 / 8); the loss is the sum over
modules, samples and pairs of (K_S - K_T)^2 (code: a sum, not a mean), the teacher's kernel held
constant. The gradient is combined as MHGD's (section 5): per student tensor
g_CE + clip_by_norm(g_KD, beta * ||g_CE|| * sigmoid(epoch)) (code: the authors' optimiser clips
every method named "KD-..."; ``clip=false`` adds the gradients instead); ``weight`` scales
the loss before clipping.

Two details of the authors' code are left out, both inert here: they scale both vectors by the
teacher's normalised singular value sigma_1 / sqrt(sigma_1^2 + 1e-3), which is 1 up to
5e-4 / sigma_1^2, and they zero non-finite loss entries, which the finite vectors of
mhgd.methods.svd and a kernel in (0, 1] cannot produce.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mhgd.config.schema import MethodConfig, bounded, choice
from mhgd.errors import ConfigError
from mhgd.methods.base import (
    Distiller,
    ModelOutput,
    Stats,
    float32_region,
    register,
    require_same_channels,
)
from mhgd.methods.clipping import combine_clipped_gradients
from mhgd.methods.svd import SIGN_RULES, ZeroedGradientCounter, student_vectors, teacher_vectors
from mhgd.models.base import SensedModel, SensingPoint

KERNEL_WIDTH = 8.0  # (code) the RBF's denominator: exp(-(a - b)^2 / 8)


def rbf_kernel(back: Tensor, front: Tensor) -> Tensor:
    """K[n, b, f] = exp(-(back[n, b] - front[n, f])^2 / 8), for (N, D_B) and (N, D_F) vectors."""
    if back.dim() != 2 or front.dim() != 2 or back.shape[0] != front.shape[0]:
        raise ValueError(
            "back and front vectors must be (N, D) of the same batch, got "
            f"{tuple(back.shape)} and {tuple(front.shape)}"
        )
    return torch.exp(-(back.unsqueeze(2) - front.unsqueeze(1)).square() / KERNEL_WIDTH)


def kdsvd_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Sum over modules of sum (K_S - K_T)^2 between consecutive points' vectors (unweighted)."""
    check_vector_lists(student, teacher)
    total = student[0].new_zeros(())
    for (s_front, s_back), (t_front, t_back) in zip(
        itertools.pairwise(student), itertools.pairwise(teacher), strict=True
    ):
        teacher_kernel = rbf_kernel(t_back, t_front).detach()
        total = total + (rbf_kernel(s_back, s_front) - teacher_kernel).square().sum()
    return total


def check_vector_lists(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> None:
    if len(student) != len(teacher) or not student:
        raise ValueError(
            "give one student and one teacher vector set per sensing point, got "
            f"{len(student)} and {len(teacher)}"
        )
    for s, t in zip(student, teacher, strict=True):
        if s.shape != t.shape:
            raise ValueError(
                f"student and teacher vectors differ in shape: {tuple(s.shape)} vs {tuple(t.shape)}"
            )


@dataclass
class SingularVectorConfig(MethodConfig):
    """KD-SVD's and KD-SVDF's keys."""

    name: str = "kdsvd"
    beta: float = bounded(1.0, ge=0)
    weight: float = bounded(1.0, ge=0)
    clip: bool = True
    student_k: int = bounded(4, ge=1)
    sign: str = choice("sum", *SIGN_RULES)


class SingularVectorDistiller(Distiller, ABC):
    """What KD-SVD and KD-SVDF share: aligned singular vectors and the clipped gradient.

    Subclasses define ``transfer_loss`` on the per-point vector lists.
    """

    requires_teacher = True
    Config = SingularVectorConfig

    def __init__(self, teacher: SensedModel | None, student: SensedModel, cfg: Any) -> None:
        super().__init__(teacher, student, cfg)
        self._check_settings(cfg)
        self.beta, self.weight = float(cfg.beta), float(cfg.weight)
        self.sign, self.student_k = str(cfg.sign), int(cfg.student_k)
        self.clips = bool(cfg.clip)
        self.counter = ZeroedGradientCounter()

    @classmethod
    def _check_settings(cls, cfg: Any) -> None:
        for key in ("beta", "weight"):
            if not 0 <= float(cfg[key]) < math.inf:
                raise ConfigError(f"method.{key} must be finite and >= 0, got {cfg[key]}")
        if str(cfg.sign) not in SIGN_RULES:
            raise ConfigError(f"method.sign={cfg.sign!r}: choose one of {sorted(SIGN_RULES)}")
        if int(cfg.student_k) < 1:
            raise ConfigError(f"method.student_k must be >= 1, got {cfg.student_k}")

    @classmethod
    def describe(cls, cfg: Any) -> dict[str, Any]:
        return {"beta": float(cfg.beta), "weight": float(cfg.weight), "clip": bool(cfg.clip)}

    @classmethod
    def check_pair(
        cls, cfg: Any, teacher: Sequence[SensingPoint], student: Sequence[SensingPoint]
    ) -> None:
        cls._check_settings(cfg)
        require_same_channels(cls.name, teacher, student)

    @abstractmethod
    def transfer_loss(self, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
        """The unweighted loss between the aligned student and the teacher vectors."""

    def loss_terms(
        self, student_out: ModelOutput, teacher_out: ModelOutput | None, labels: Tensor
    ) -> dict[str, Tensor]:
        if teacher_out is None:
            raise ValueError(f"{self.name} needs the teacher's feature maps; none were given")
        with float32_region(student_out[1][0]):
            t_vectors = [teacher_vectors(f.float(), self.sign) for f in teacher_out[1]]
            s_vectors = [
                student_vectors(f.float(), t, self.student_k, self.counter)
                for f, t in zip(student_out[1], t_vectors, strict=True)
            ]
            return {"transfer": self.weight * self.transfer_loss(s_vectors, t_vectors)}

    def backward(
        self, ce: Tensor, terms: Mapping[str, Tensor], params: Sequence[nn.Parameter], epoch: int
    ) -> Stats:
        if self.clips:
            stats = combine_clipped_gradients(ce, terms["transfer"], params, self.beta, epoch)
        else:
            stats = super().backward(ce, terms, params, epoch)
        stats["zeroed_svd_grads"] = self.counter.take()
        return stats


@register
class KDSVD(SingularVectorDistiller):
    """RBF relations between consecutive points' singular vectors, matched by L2."""

    name = "kdsvd"

    def transfer_loss(self, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
        return kdsvd_loss(student, teacher)
