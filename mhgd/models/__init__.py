"""The networks of the paper, built by name so configs and sweeps can pick them.

Each model module registers its builders (``@MODELS.register``); the registry finds every
module of this package on first use, so adding a network is a module and a yaml file.
"""

from __future__ import annotations

from mhgd.models.base import SensedModel, SensingPoint
from mhgd.models.layers import DEFAULT_INIT, INIT_MODES, he_init
from mhgd.models.registry import MODELS

__all__ = [
    "DEFAULT_INIT",
    "INIT_MODES",
    "MODELS",
    "MODEL_NAMES",
    "SensedModel",
    "SensingPoint",
    "build_model",
]


def __getattr__(name: str) -> tuple[str, ...]:
    """``MODEL_NAMES``: every registered model name (found on first use)."""
    if name == "MODEL_NAMES":
        return MODELS.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    builder = MODELS.get(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not width > 0:
        raise ValueError(f"width must be a positive channel multiplier (1 = paper), got {width!r}")
    if init not in INIT_MODES:
        raise ValueError(f"init must be one of {INIT_MODES}, got {init!r}")
    options = {} if batch_norm is None else {"batch_norm": batch_norm}
    model = builder(num_classes=num_classes, image_size=image_size, width=width, **options)
    if init != DEFAULT_INIT:  # the networks initialise themselves with the default
        he_init(model, init)
    return model
