"""MHGD: graph-based knowledge distillation by multi-head attention network."""

from mhgd import _compat  # noqa: F401  (must run before anything imports torchvision)
