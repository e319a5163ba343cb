"""Table 3's MobileNet student: conv3x3-16, DS 64 | DS 128/2, DS 128 | DS 256/2, DS 256, GAP, FC.

A depthwise-separable (DS) unit is depthwise 3x3 + BN + ReLU + pointwise 1x1 + BN + ReLU, the
depthwise conv carrying the stride. Sensed at each '|' and at the end: 32x32x64, 16x16x128,
8x8x256 (the stem has stride 2 for 64x64 inputs).
"""

from __future__ import annotations

from functools import partial

from torch import nn

from mhgd.models.layers import StagedNet, StagePlan, conv1x1, conv3x3, norm, table3_student
from mhgd.models.registry import MODELS

_PLANS = (
    StagePlan(((64, 1),)),
    StagePlan(((128, 2), (128, 1))),
    StagePlan(((256, 2), (256, 1))),
)


def depthwise_separable(
    in_channels: int, out_channels: int, stride: int, batch_norm: bool
) -> nn.Sequential:
    bias = not batch_norm
    return nn.Sequential(
        conv3x3(in_channels, in_channels, stride, bias=bias, groups=in_channels),
        norm(in_channels, batch_norm),
        nn.ReLU(inplace=True),
        conv1x1(in_channels, out_channels, 1, bias=bias),
        norm(out_channels, batch_norm),
        nn.ReLU(inplace=True),
    )


@MODELS.register("mobilenet")
def mobilenet(
    *, num_classes: int, image_size: int, width: float = 1.0, batch_norm: bool = True
) -> StagedNet:
    return table3_student(
        _PLANS,
        partial(depthwise_separable, batch_norm=batch_norm),
        num_classes=num_classes,
        image_size=image_size,
        width=width,
        batch_norm=batch_norm,
    )
