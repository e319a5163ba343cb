"""MHGD: graph-based knowledge distillation by multi-head attention network."""

import os

from mhgd import _compat  # noqa: F401  (must run before anything imports torchvision)

# (choice, measured) How long an idle OpenMP thread of torch's (GNU OpenMP) spins before it
# sleeps, read once when torch loads: so set here, before anything imports torch, unless the
# user set it. GNU's default keeps a core busy for milliseconds after every parallel operator,
# which stalls the CPU eigendecompositions that run on worker threads right after one
# (mhgd.methods.cpu_eigh: 64 x 64 batches 18.7 ms with the default, 12.2 ms with this).
OPENMP_SPIN_COUNT = "20000"
os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)
