"""Distillation methods behind one contract; importing this package registers them all."""

from mhgd.methods.ab import AB
from mhgd.methods.base import (
    METHODS,
    Distiller,
    ModelOutput,
    PreStage,
    method_class,
    register,
    require_same_channels,
)
from mhgd.methods.fsp import FSP
from mhgd.methods.kdsvd import KDSVD
from mhgd.methods.kdsvdf import KDSVDF
from mhgd.methods.mhgd import MHGD
from mhgd.methods.soft_logits import SoftLogits

__all__ = [
    "AB",
    "FSP",
    "KDSVD",
    "KDSVDF",
    "METHODS",
    "MHGD",
    "Distiller",
    "ModelOutput",
    "PreStage",
    "SoftLogits",
    "method_class",
    "register",
    "require_same_channels",
]
