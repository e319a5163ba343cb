"""Table 3's ResNet student: conv3x3-16, basic blocks 64, 128/2, 256/2, GAP, FC.

Each block's post-ReLU output is a sensing point: 32x32x64, 16x16x128, 8x8x256 (the stem has
stride 2 for 64x64 inputs, so the points are the same on TinyImageNet).
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from mhgd.models.layers import StagedNet, StagePlan, conv1x1, conv3x3, norm, table3_student
from mhgd.models.registry import MODELS

_PLANS = (StagePlan(((64, 1),)), StagePlan(((128, 2),)), StagePlan(((256, 2),)))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the input (or its 1x1 conv + BN projection), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        bias = not batch_norm
        self.residual = nn.Sequential(
            conv3x3(in_channels, out_channels, stride, bias=bias),
            norm(out_channels, batch_norm),
            nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels, 1, bias=bias),
            norm(out_channels, batch_norm),
        )
        reshapes = stride != 1 or in_channels != out_channels
        self.shortcut = (
            nn.Sequential(
                conv1x1(in_channels, out_channels, stride, bias=bias),
                norm(out_channels, batch_norm),
            )
            if reshapes
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return (self.residual(x) + self.shortcut(x)).relu_()


@MODELS.register("resnet")
def resnet(
    *, num_classes: int, image_size: int, width: float = 1.0, batch_norm: bool = True
) -> StagedNet:
    return table3_student(
        _PLANS,
        partial(BasicBlock, batch_norm=batch_norm),
        num_classes=num_classes,
        image_size=image_size,
        width=width,
        batch_norm=batch_norm,
    )
