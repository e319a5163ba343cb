"""Import-time fix for torchvision 0.28 next to a CPU-only torch, installed without torch.

The torchvision wheel links CUDA libraries and, at import, registers fake kernels for its C++ ops
(``torchvision._meta_registrations``). A CPU-only torch has no ``torchvision::nms`` operator, so
that registration raises and ``import torchvision`` fails. mhgd only needs torchvision's data
sets and transforms, never its C++ ops, so on a torch without CUDA we put an empty module in the
place of the registrations before torchvision loads. With CUDA the real module loads untouched.

Checking CUDA needs torch, which the CLI must not pay for at start-up (``--help``, tab
completion), so the check runs in an import hook, when something first imports torchvision
(which imports torch anyway).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

_META = "torchvision._meta_registrations"


class _TorchvisionFix:
    """A meta-path finder that finds nothing: it only applies the fix on torchvision's import."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            if not torch.backends.cuda.is_built() and _META not in sys.modules:
                sys.modules[_META] = types.ModuleType(_META)
        return None


if not any(isinstance(finder, _TorchvisionFix) for finder in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionFix())
