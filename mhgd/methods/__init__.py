"""Distillation methods behind one contract (``base.Distiller``).

Each method module registers its class with ``@register``; the registry finds every module of
this package on first use (``method_class``, ``METHODS``), so adding a method is a module and a
yaml file, with no import to add here. Method classes are also reachable as attributes of this
package by class name (``mhgd.methods.MHGD``).
"""

from __future__ import annotations

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


def __getattr__(name: str) -> type[Distiller]:
    """A registered method class by its class name, e.g. ``from mhgd.methods import MHGD``."""
    for _, cls in METHODS.items():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
