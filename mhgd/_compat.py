"""Import-time fix for torchvision 0.28 next to a CPU-only torch.

The torchvision wheel links CUDA libraries and, at import, registers fake kernels for its C++ ops
(``torchvision._meta_registrations``). A CPU-only torch has no ``torchvision::nms`` operator, so
that registration raises and ``import torchvision`` fails. mhgd only needs torchvision's data
sets and transforms, never its C++ ops, so on a torch without CUDA we put an empty module in the
place of the registrations before the first import. With CUDA the real module loads untouched.
"""

import sys
import types

import torch

_META = "torchvision._meta_registrations"

if not torch.backends.cuda.is_built() and _META not in sys.modules:
    sys.modules[_META] = types.ModuleType(_META)
