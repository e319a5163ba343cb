"""Distillation methods behind one contract; importing this package registers them all."""

from mhgd.methods.base import (
    METHODS,
    Distiller,
    ModelOutput,
    PreStage,
    method_class,
    register,
    require_same_channels,
)
from mhgd.methods.mhgd import MHGD

__all__ = [
    "METHODS",
    "MHGD",
    "Distiller",
    "ModelOutput",
    "PreStage",
    "method_class",
    "register",
    "require_same_channels",
]
