"""AB, activation boundaries (Heo et al. 2019), as the MHGD authors ran it (method.md section 9).

At each sensing point i (0 = shallowest) a student-side connector (1x1 conv without bias, then
batch norm, no activation) maps the student's map to the teacher's channels. Where the teacher
neuron is active (its post-ReLU output > 0, i.e. its pre-activation > 0), the connector output s
is pushed above the margin m, elsewhere below -m, by the alternative L2 criterion (code):

    (s + m)^2 [s > -m and t <= 0] + (s - m)^2 [s <= m and t > 0],

summed over channels and positions, averaged over the batch, weighted 2^i (deeper points count
more), summed over points and multiplied by ``weight`` (3e-3). Initialisation-type: this loss
alone trains the student and the connectors first (mhgd.methods.init_stage); the connectors are
then frozen and unused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mhgd.config.schema import MethodConfig, bounded
from mhgd.errors import ConfigError
from mhgd.methods.base import float32_region, register
from mhgd.methods.init_stage import InitConfig, InitialisationDistiller
from mhgd.models.base import SensedModel, SensingPoint
from mhgd.models.layers import he_init


def connector(student_channels: int, teacher_channels: int) -> nn.Sequential:
    """1x1 conv (no bias) + batch norm, no activation: student map -> teacher channels."""
    block = nn.Sequential(
        nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
        nn.BatchNorm2d(teacher_channels),
    )
    he_init(block)
    return block


def boundary_loss(source: Tensor, target: Tensor, margin: float) -> Tensor:
    """The alternative L2 criterion at one point: per-sample sum, then the batch mean.

    ``source`` is the connector's output, ``target`` the teacher's map (only its sign is used).
    """
    if source.shape != target.shape:
        raise ValueError(
            "the connector output and the teacher map must have the same shape, got "
            f"{tuple(source.shape)} and {tuple(target.shape)}"
        )
    active = target > 0
    below = (source + margin).square() * (~active & (source > -margin))
    above = (source - margin).square() * (active & (source <= margin))
    return (below + above).flatten(1).sum(dim=1).mean()


@dataclass
class ABConfig(MethodConfig):
    name: str = "ab"
    weight: float = bounded(3.0e-3, gt=0)
    margin: float = bounded(1.0, gt=0)
    init: InitConfig = field(default_factory=InitConfig)


@register
class AB(InitialisationDistiller):
    """Activation boundaries through student-side connectors, in an init stage."""

    name = "ab"
    Config = ABConfig

    def __init__(self, teacher: SensedModel | None, student: SensedModel, cfg: Any) -> None:
        super().__init__(teacher, student, cfg)
        self.weight, self.margin = float(cfg.weight), float(cfg.margin)
        self.connectors = nn.ModuleList(
            connector(s.channels, t.channels)
            for s, t in zip(student.sensing, self.teacher.sensing, strict=True)
        )

    @classmethod
    def describe(cls, cfg: Any) -> dict[str, Any]:
        return {
            "weight": float(cfg.weight),
            "margin": float(cfg.margin),
            "init_epochs": int(cfg.init.epochs),
        }

    @classmethod
    def check_pair(
        cls, cfg: Any, teacher: Sequence[SensingPoint], student: Sequence[SensingPoint]
    ) -> None:
        cls.check_init(cfg)
        for key in ("weight", "margin"):
            if float(cfg[key]) <= 0:
                raise ConfigError(f"method.{key} must be > 0, got {cfg[key]}")
        t_sizes, s_sizes = [p.size for p in teacher], [p.size for p in student]
        if t_sizes != s_sizes:
            raise ConfigError(
                f"AB compares teacher and student maps position by position, but the teacher "
                f"senses maps of sizes {t_sizes} and the student {s_sizes}; pick a student "
                "with the same sensing points (channels may differ: the connectors map them)"
            )

    def distillation_loss(
        self, student_maps: Sequence[Tensor], teacher_maps: Sequence[Tensor]
    ) -> Tensor:
        if not len(student_maps) == len(teacher_maps) == len(self.connectors):
            raise ValueError(
                f"AB has {len(self.connectors)} connectors but got {len(student_maps)} student "
                f"and {len(teacher_maps)} teacher maps"
            )
        total = student_maps[0].new_zeros((), dtype=torch.float32)
        for i, (link, s_map, t_map) in enumerate(
            zip(self.connectors, student_maps, teacher_maps, strict=True)
        ):
            source = link(s_map).float()  # the connector is a network layer: its precision
            with float32_region(source):
                total = total + 2.0**i * boundary_loss(source, t_map.float(), self.margin)
        return self.weight * total
