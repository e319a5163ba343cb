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

__all__ = [
    "METHODS",
    "Distiller",
    "ModelOutput",
    "PreStage",
    "method_class",
    "register",
    "require_same_channels",
]
