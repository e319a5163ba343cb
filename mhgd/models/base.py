"""The contract every network of the paper follows, so methods never special-case a model."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class SensingPoint:
    """Shape of one sensed feature map (per sample): channels x size x size."""

    channels: int
    size: int


class SensedModel(nn.Module):
    """A classifier that also returns its feature maps at the sensing points.

    Subclasses set ``self.sensing`` (one SensingPoint per sensed map, input to output order) in
    ``__init__``, so a teacher/student pairing can be checked from configs before any compute,
    and implement ``forward(x) -> (logits, [feature maps])``.
    """

    sensing: tuple[SensingPoint, ...]

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError
