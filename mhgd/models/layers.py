"""Parts shared by the networks: input-size policy, channel scaling, conv units, He init.

Also ``build_stages`` and ``StagedNet``: all networks but the WRNs are a stem and a few stages
whose outputs are the sensed maps, so their shape bookkeeping and forward pass are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from mhgd.models.base import SensedModel, SensingPoint

INPUT_DOWNSAMPLING = {32: 1, 64: 2}
"""Image size (32 = CIFAR-100, 64 = TinyImageNet) -> how much a network shrinks its input early so
that its sensing points keep their CIFAR sizes."""


def input_downsampling(image_size: int) -> int:
    """The early stride (or extra pool) the paper uses for this image size."""
    if image_size not in INPUT_DOWNSAMPLING:
        raise ValueError(
            f"image_size must be one of {sorted(INPUT_DOWNSAMPLING)} (32 = CIFAR-100, "
            f"64 = TinyImageNet), got {image_size!r}"
        )
    return INPUT_DOWNSAMPLING[image_size]


def scaled(channels: int, width: float) -> int:
    """A channel count of a narrowed (or widened) network; never 0, so tiny test models run."""
    return max(1, round(channels * width))


def norm(channels: int, batch_norm: bool) -> nn.Module:
    """Batch norm, or nothing for the networks that run without it (the paper's VGGs)."""
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def conv3x3(
    in_channels: int, out_channels: int, stride: int, *, bias: bool, groups: int = 1
) -> nn.Conv2d:
    """A 'same' 3x3 conv; a conv followed by batch norm needs no bias."""
    return nn.Conv2d(
        in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=bias
    )


def conv1x1(in_channels: int, out_channels: int, stride: int, *, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)


def conv_unit(in_channels: int, out_channels: int, stride: int, batch_norm: bool) -> nn.Sequential:
    """conv3x3 (+ BN) + ReLU, the unit of the VGGs and of every stem with a post-activation."""
    return nn.Sequential(
        conv3x3(in_channels, out_channels, stride, bias=not batch_norm),
        norm(out_channels, batch_norm),
        nn.ReLU(inplace=True),
    )


def gap_classifier(channels: int, num_classes: int) -> nn.Sequential:
    """Global average pool then one linear layer: the head of every non-VGG network here."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


INIT_MODES = ("fan_in", "fan_out")
DEFAULT_INIT = "fan_in"
"""What a network built without an ``init`` gets; the configs of the paper's experiments ask
for the authors' fan-out (model/*.yaml)."""


def he_init(model: nn.Module, mode: str = DEFAULT_INIT) -> None:
    """He normal init (method.md section 6) over ``mode``; BN starts as the identity.

    The authors' code uses fan-out (code): std sqrt(2 / (k * k * out channels)) for a conv,
    sqrt(2 / out features) for a linear layer. Fan-in (torch's Kaiming default) keeps each
    layer's output at the scale of its input instead. They differ most where the channel count
    changes: fan-out starts a classifier with few classes (std sqrt(2 / classes)) with large
    logits (a narrow VGG16 on the digits began at a cross-entropy of 35), and at init the
    BN-free VGG16's deepest sensed maps differ ~20x in scale between the two. torch counts a
    grouped conv's fans per group, so a depthwise 3x3 filter gets std sqrt(2 / 9) either way.
    """
    if mode not in INIT_MODES:
        raise ValueError(f"init mode must be one of {INIT_MODES}, got {mode!r}")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


UnitFactory = Callable[[int, int, int], nn.Module]
"""(in channels, out channels, stride) -> one unit of a stage (a conv unit, a residual block...)."""


@dataclass(frozen=True)
class StagePlan:
    """The units (out channels, stride) up to one sensing point, and whether a 2x2 max pool ends
    the stage."""

    units: tuple[tuple[int, int], ...]
    pool: bool = False


def build_stages(
    plans: Sequence[StagePlan], unit: UnitFactory, *, in_channels: int, size: int, width: float
) -> tuple[list[nn.Sequential], list[SensingPoint]]:
    """Build the stages, scaling every channel count by ``width``, and track their output shapes
    so the sensing points are declared without running the network."""
    stages, sensing = [], []
    channels = in_channels
    for plan in plans:
        layers = []
        for out_channels, stride in plan.units:
            layers.append(unit(channels, scaled(out_channels, width), stride))
            channels, size = scaled(out_channels, width), size // stride
        if plan.pool:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        stages.append(nn.Sequential(*layers))
        sensing.append(SensingPoint(channels, size))
    return stages, sensing


class StagedNet(SensedModel):
    """An optional stem, then consecutive stages each ending at a sensing point, then a
    classifier."""

    def __init__(
        self,
        stages: Sequence[nn.Module],
        sensing: Sequence[SensingPoint],
        classifier: nn.Module,
        *,
        stem: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if len(stages) != len(sensing):
            raise ValueError(f"{len(stages)} stages but {len(sensing)} sensing points declared")
        self.stem = nn.Identity() if stem is None else stem
        self.stages = nn.ModuleList(stages)
        self.sensing = tuple(sensing)
        self.classifier = classifier
        he_init(self)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return self.classifier(x), feats


_TABLE3_STEM_CHANNELS = 16


def table3_student(
    plans: Sequence[StagePlan],
    unit: UnitFactory,
    *,
    num_classes: int,
    image_size: int,
    width: float,
    batch_norm: bool,
) -> StagedNet:
    """The layout shared by Table 3's students: a conv3x3-16 + BN + ReLU stem (stride 2 on
    64x64 inputs, so the sensing points keep their CIFAR sizes), the stages, GAP, FC."""
    stem_stride = input_downsampling(image_size)
    stem_channels = scaled(_TABLE3_STEM_CHANNELS, width)
    stages, sensing = build_stages(
        plans, unit, in_channels=stem_channels, size=image_size // stem_stride, width=width
    )
    return StagedNet(
        stages,
        sensing,
        gap_classifier(sensing[-1].channels, num_classes),
        stem=conv_unit(3, stem_channels, stem_stride, batch_norm),
    )
