"""The plain conv networks: the VGG16 teacher, the VGG7 student and Table 3's modified VGG.

VGG16/VGG7 sense after each of their five blocks (after the block's pooling) and classify the
flattened 2x2x512 map with FC-1024 layers. By default they have no batch norm and no dropout
(method.md's choice); ``batch_norm=True`` adds BN after each conv.

Decision (TinyImageNet, 64x64): VGG16/VGG7 add a max pool after the fourth block, so the deep
points and the classifier input (2x2x512 flattened) keep their CIFAR sizes and the FC layers their
shapes; their sensing sizes are then 32, 16, 8, 4, 2 instead of CIFAR's 16, 8, 4, 4, 2. The
modified VGG, like the other Table 3 students, instead gets a stride-2 stem and senses at 32,
16, 8 on both data sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from mhgd.models.layers import (
    StagedNet,
    StagePlan,
    build_stages,
    conv_unit,
    input_downsampling,
    scaled,
    table3_student,
)
from mhgd.models.registry import MODELS

_VGG_BLOCK_CHANNELS = (64, 128, 256, 512, 512)
_VGG_HIDDEN = 1024
_MODIFIED_VGG_PLANS = (
    StagePlan(((64, 1), (64, 1))),
    StagePlan(((128, 2), (128, 1))),
    StagePlan(((256, 2), (256, 1))),
)


def _mlp_classifier(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for features in hidden:
        layers += [nn.Linear(in_features, features), nn.ReLU(inplace=True)]
        in_features = features
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


def _vgg(
    convs_per_block: Sequence[int],
    hidden_layers: int,
    *,
    num_classes: int,
    image_size: int,
    width: float,
    batch_norm: bool,
) -> StagedNet:
    pools_fourth_block = input_downsampling(image_size) > 1
    plans = [
        StagePlan(((channels, 1),) * count, pool=block != 3 or pools_fourth_block)
        for block, (channels, count) in enumerate(
            zip(_VGG_BLOCK_CHANNELS, convs_per_block, strict=True)
        )
    ]
    stages, sensing = build_stages(
        plans,
        partial(conv_unit, batch_norm=batch_norm),
        in_channels=3,
        size=image_size,
        width=width,
    )
    last = sensing[-1]
    classifier = _mlp_classifier(
        last.channels * last.size * last.size,
        [scaled(_VGG_HIDDEN, width)] * hidden_layers,
        num_classes,
    )
    return StagedNet(stages, sensing, classifier)


@MODELS.register("vgg16")
def vgg16(
    *, num_classes: int, image_size: int, width: float = 1.0, batch_norm: bool = False
) -> StagedNet:
    """The VGG teacher: 2, 2, 3, 3, 3 convs per block; FC-1024, FC-1024, FC-classes."""
    return _vgg(
        (2, 2, 3, 3, 3),
        2,
        num_classes=num_classes,
        image_size=image_size,
        width=width,
        batch_norm=batch_norm,
    )


@MODELS.register("vgg7")
def vgg7(
    *, num_classes: int, image_size: int, width: float = 1.0, batch_norm: bool = False
) -> StagedNet:
    """The VGG student: one conv per block; FC-1024, FC-classes."""
    return _vgg(
        (1, 1, 1, 1, 1),
        1,
        num_classes=num_classes,
        image_size=image_size,
        width=width,
        batch_norm=batch_norm,
    )


@MODELS.register("modified_vgg")
def modified_vgg(
    *, num_classes: int, image_size: int, width: float = 1.0, batch_norm: bool = True
) -> StagedNet:
    """Table 3's student: conv-16 stem, conv-64, conv-64 | conv-128/2, conv-128 | conv-256/2,
    conv-256, sensed at each '|' and at the end; GAP, FC."""
    return table3_student(
        _MODIFIED_VGG_PLANS,
        partial(conv_unit, batch_norm=batch_norm),
        num_classes=num_classes,
        image_size=image_size,
        width=width,
        batch_norm=batch_norm,
    )
