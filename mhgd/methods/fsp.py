"""FSP, the flow of solution procedure (Yim et al. 2017), as the MHGD authors ran it (method.md 9).

Between consecutive sensing points (front F, back B) the flow matrix of a sample is
G = F^T B / HW (C_F x C_B), with the maps read as HW x C after the larger one is max-pooled to
the smaller one's size (code: a 2x2 pool, here a k x k pool for a k-fold size ratio). The loss
is sum over modules of the batch mean of ||G_T - G_S||^2 / 2, times ``weight`` (1e-3) (code).
Initialisation-type: this loss alone trains the student first (mhgd.methods.init_stage).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mhgd.config.schema import MethodConfig, bounded
from mhgd.errors import ConfigError
from mhgd.methods.base import float32_region, register, require_same_channels
from mhgd.methods.init_stage import InitConfig, InitialisationDistiller
from mhgd.models.base import SensingPoint


def _pool_to(features: Tensor, size: int) -> Tensor:
    ratio = features.shape[-1] // size
    if features.shape[-2:] != (size * ratio, size * ratio):
        raise ValueError(
            f"FSP max-pools the larger map of a module to the smaller one, so their sizes must "
            f"be square multiples: got {tuple(features.shape[-2:])} and {size}x{size}"
        )
    return F.max_pool2d(features, ratio) if ratio > 1 else features


def flow_matrix(front: Tensor, back: Tensor) -> Tensor:
    """G = F^T B / HW per sample, (N, C_F, C_B), after pooling the larger map to the smaller."""
    if front.dim() != 4 or back.dim() != 4 or front.shape[0] != back.shape[0]:
        raise ValueError(
            "front and back maps must be (N, C, H, W) of the same batch, got "
            f"{tuple(front.shape)} and {tuple(back.shape)}"
        )
    size = min(front.shape[-1], back.shape[-1])
    front, back = _pool_to(front, size), _pool_to(back, size)
    positions = size * size
    return front.flatten(2) @ back.flatten(2).mT / positions


def fsp_loss(student_maps: Sequence[Tensor], teacher_maps: Sequence[Tensor]) -> Tensor:
    """Sum over modules of mean_n sum_ij (G_T - G_S)^2 / 2 (unweighted); the teacher is constant."""
    if len(student_maps) != len(teacher_maps) or len(student_maps) < 2:
        raise ValueError(
            "FSP needs the same number (>= 2) of student and teacher maps, got "
            f"{len(student_maps)} and {len(teacher_maps)}"
        )
    total = student_maps[0].new_zeros((), dtype=torch.float32)
    student_pairs = itertools.pairwise(student_maps)
    teacher_pairs = itertools.pairwise(teacher_maps)
    with float32_region(total):  # a Gram matrix in bf16 loses the small flows
        for (s_front, s_back), (t_front, t_back) in zip(student_pairs, teacher_pairs, strict=True):
            student_flow = flow_matrix(s_front.float(), s_back.float())
            teacher_flow = flow_matrix(t_front.float(), t_back.float()).detach()
            total = total + (teacher_flow - student_flow).square().sum(dim=(1, 2)).mean() / 2
    return total


def _check_poolable(role: str, sensing: Sequence[SensingPoint]) -> None:
    for front, back in itertools.pairwise(sensing):
        large, small = max(front.size, back.size), min(front.size, back.size)
        if large % small:
            raise ConfigError(
                f"FSP pools the larger of two consecutive maps to the smaller, but the {role}'s "
                f"sensing points have sizes {front.size} and {back.size}; pick a model whose "
                "consecutive sizes divide each other (all the paper's models do)"
            )


@dataclass
class FSPConfig(MethodConfig):
    name: str = "fsp"
    weight: float = bounded(1.0e-3, gt=0)
    init: InitConfig = field(default_factory=InitConfig)


@register
class FSP(InitialisationDistiller):
    """Flow matrices between consecutive sensing points, matched by L2 in an init stage."""

    name = "fsp"
    Config = FSPConfig

    def __init__(self, teacher: Any, student: Any, cfg: Any) -> None:
        super().__init__(teacher, student, cfg)
        self.weight = float(cfg.weight)

    @classmethod
    def describe(cls, cfg: Any) -> dict[str, Any]:
        return {"weight": float(cfg.weight), "init_epochs": int(cfg.init.epochs)}

    @classmethod
    def check_pair(
        cls, cfg: Any, teacher: Sequence[SensingPoint], student: Sequence[SensingPoint]
    ) -> None:
        cls.check_init(cfg)
        if float(cfg.weight) <= 0:
            raise ConfigError(f"method.weight (the FSP loss weight) must be > 0, got {cfg.weight}")
        require_same_channels(cls.name, teacher, student)
        _check_poolable("teacher", teacher)
        _check_poolable("student", student)

    def distillation_loss(
        self, student_maps: Sequence[Tensor], teacher_maps: Sequence[Tensor]
    ) -> Tensor:
        return self.weight * fsp_loss(student_maps, teacher_maps)
