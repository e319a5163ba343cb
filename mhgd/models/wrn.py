"""Pre-activation wide ResNets: the WRN-22-4 teacher and the WRN-10-4 student.

conv3x3-16 stem (stride 2 for 64x64 inputs); three stages of (depth - 4) / 6 wide basic blocks
of widths 16k, 32k, 64k with strides 1, 2, 2; no dropout; final BN-ReLU, global average pool, FC.

A stage is sensed after BN-ReLU. For stages 1 and 2 that is the BN-ReLU the next stage's first
block applies to its input anyway, so sensing costs no parameters and changes nothing; for stage 3
it is the final BN-ReLU.
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn

from mhgd.models.base import SensedModel, SensingPoint
from mhgd.models.layers import (
    conv1x1,
    conv3x3,
    gap_classifier,
    he_init,
    input_downsampling,
    norm,
    scaled,
)
from mhgd.models.registry import MODELS

_STAGE_STRIDES = (1, 2, 2)
_STEM_CHANNELS = 16


def _bn_relu(channels: int, batch_norm: bool) -> nn.Sequential:
    """Not in place: without BN the ReLU would overwrite the block input the shortcut adds."""
    return nn.Sequential(norm(channels, batch_norm), nn.ReLU())


class PreActBlock(nn.Module):
    """BN-ReLU, conv3x3, BN-ReLU, conv3x3, plus the input (or its 1x1 projection when the shape
    changes, taken from the activated input as in the original WRN)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        bias = not batch_norm
        self.preact = _bn_relu(in_channels, batch_norm)
        self.conv1 = conv3x3(in_channels, out_channels, stride, bias=bias)
        self.mid = _bn_relu(out_channels, batch_norm)
        self.conv2 = conv3x3(out_channels, out_channels, 1, bias=bias)
        self.projection = (
            conv1x1(in_channels, out_channels, stride, bias=bias)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the block's output and its activated input (a sensed map for a stage opener)."""
        activated = self.preact(x)
        residual = self.conv2(self.mid(self.conv1(activated)))
        shortcut = x if self.projection is None else self.projection(activated)
        return shortcut + residual, activated


class WideResNet(SensedModel):
    """WRN-depth-widen_factor, pre-activation, sensed after each stage's BN-ReLU."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        *,
        num_classes: int,
        image_size: int,
        width: float = 1.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(
                f"a WRN's depth must be 6n + 4 with n >= 1 blocks per stage (10, 16, 22, 28, "
                f"...), got {depth}"
            )
        blocks_per_stage = (depth - 4) // 6
        stem_stride = input_downsampling(image_size)
        channels, size = scaled(_STEM_CHANNELS, width), image_size // stem_stride
        self.stem = conv3x3(3, channels, stem_stride, bias=not batch_norm)

        blocks, sensing = [], []
        for stage, stage_stride in enumerate(_STAGE_STRIDES):
            out_channels = scaled(_STEM_CHANNELS * widen_factor * 2**stage, width)
            for index in range(blocks_per_stage):
                stride = stage_stride if index == 0 else 1
                blocks.append(PreActBlock(channels, out_channels, stride, batch_norm))
                channels = out_channels
            size //= stage_stride
            sensing.append(SensingPoint(channels, size))
        self.blocks = nn.ModuleList(blocks)
        self._sensed_inputs = frozenset(
            stage * blocks_per_stage for stage in range(1, len(_STAGE_STRIDES))
        )
        self.final_activation = _bn_relu(channels, batch_norm)
        self.classifier = gap_classifier(channels, num_classes)
        self.sensing = tuple(sensing)
        he_init(self)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.stem(x)
        feats = []
        for index, block in enumerate(self.blocks):
            x, activated = block(x)
            if index in self._sensed_inputs:
                feats.append(activated)
        x = self.final_activation(x)
        feats.append(x)
        return self.classifier(x), feats


MODELS.add("wrn22_4", partial(WideResNet, depth=22, widen_factor=4))
MODELS.add("wrn10_4", partial(WideResNet, depth=10, widen_factor=4))
