"""The networks of the paper, built by name so configs and sweeps can pick them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mhgd.models.base import SensedModel, SensingPoint
from mhgd.models.layers import DEFAULT_INIT, INIT_MODES, he_init
from mhgd.models.mobilenet import mobilenet
from mhgd.models.resnet import resnet
from mhgd.models.vgg import modified_vgg, vgg7, vgg16
from mhgd.models.wrn import WideResNet

__all__ = [
    "DEFAULT_INIT",
    "INIT_MODES",
    "MODEL_NAMES",
    "SensedModel",
    "SensingPoint",
    "build_model",
]

_BUILDERS: dict[str, Callable[..., SensedModel]] = {
    "vgg16": vgg16,
    "vgg7": vgg7,
    "wrn22_4": partial(WideResNet, depth=22, widen_factor=4),
    "wrn10_4": partial(WideResNet, depth=10, widen_factor=4),
    "resnet": resnet,
    "mobilenet": mobilenet,
    "modified_vgg": modified_vgg,
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(
    name: str,
    *,
    num_classes: int,
    image_size: int,
    width: float = 1.0,
    batch_norm: bool | None = None,
    init: str = DEFAULT_INIT,
) -> SensedModel:
    """Build a freshly He-initialised network (``init``: "fan_in" or "fan_out", see he_init).

    ``width`` multiplies every channel count (as max(1, round(c * width))) for narrow test and
    quickstart models; ``batch_norm=None`` keeps the model's own default (off for the VGGs, on
    for the others).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not width > 0:
        raise ValueError(f"width must be a positive channel multiplier (1 = paper), got {width!r}")
    if init not in INIT_MODES:
        raise ValueError(f"init must be one of {INIT_MODES}, got {init!r}")
    options = {} if batch_norm is None else {"batch_norm": batch_norm}
    model = _BUILDERS[name](num_classes=num_classes, image_size=image_size, width=width, **options)
    if init != DEFAULT_INIT:  # the networks initialise themselves with the default
        he_init(model, init)
    return model
