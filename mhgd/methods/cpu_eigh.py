"""Batched symmetric eigendecomposition on the CPU, one chunk of the batch per core.

torch's CPU eigh solves a batch one matrix after another through LAPACK, and at the sizes the
compression decomposes (at most 128 x 128) MKL's own threads add little. So the batch is cut
into one chunk per intra-op thread, and each chunk is solved by its own worker thread
(torch releases the GIL inside the operator). Measured on two cores, batch 128: 64 x 64
matrices 18.1 -> 10.9 ms, 128 x 128 ones 63.9 -> 41.5 ms.

Each worker runs with one OpenMP and one MKL thread, both per-thread settings: a worker that
kept the defaults would start a thread team of its own next to the caller's, and the teams'
spinning threads would fight over the cores (measured: every MKL call in the process, the
caller's included, 4x slower afterwards). The chunking depends only on the batch size and
``torch.get_num_threads()``, and each chunk is solved single-threaded, so a result repeats
exactly for the same thread count. Elsewhere (GPU, a CPU build without MKL, one thread, small
matrices, inputs that need a gradient) this is ``torch.linalg.eigh``.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import torch
from torch import Tensor

# (choice, measured) Below this matrix size a chunk is solved faster than it is handed over.
MIN_SIZE = 16
THREAD_NAME = "mhgd-eigh"


@cache
def _single_threaded_setup() -> Callable[[], None] | None:
    """Sets the calling thread to one MKL and one OpenMP thread; None without torch's MKL."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        library = ctypes.CDLL(
            os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
        )
        set_mkl_threads, set_openmp_threads = (
            library.MKL_Set_Num_Threads_Local,
            library.omp_set_num_threads,
        )
    except (OSError, AttributeError):
        return None

    def setup() -> None:
        torch.get_num_threads()  # ATen's per-thread start-up first: it sets both to its count
        set_mkl_threads(1)
        set_openmp_threads(1)

    return setup


class _Workers:
    """The process's worker pool, rebuilt after a fork or when the thread count changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._owner: tuple[int, int] = (0, 0)  # (process id, workers)

    def pool(self, workers: int, setup: Callable[[], None]) -> ThreadPoolExecutor:
        owner = (os.getpid(), workers)
        with self._lock:
            if self._pool is None or self._owner != owner:
                if self._pool is not None and self._owner[0] == owner[0]:
                    # (a forked child's copy of the pool has no threads to stop)
                    self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(workers, THREAD_NAME, initializer=setup)
                self._owner = owner
            return self._pool


_WORKERS = _Workers()


def eigh(matrices: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors of symmetric (N, n, n), as ``torch.linalg.eigh``."""
    setup = _single_threaded_setup()
    chunks = min(torch.get_num_threads(), matrices.shape[0]) if matrices.dim() == 3 else 1
    if (
        setup is None
        or chunks < 2
        or matrices.device.type != "cpu"
        or matrices.shape[-1] < MIN_SIZE
        or matrices.requires_grad
    ):
        values, vectors = torch.linalg.eigh(matrices)
        return values, vectors
    pool = _WORKERS.pool(chunks, setup)
    batch, size = matrices.shape[:2]
    values = matrices.new_empty(batch, size)
    # Column-major like LAPACK's (and torch's) own output, which the callers' products expect;
    # every chunk is written in place, into its own rows.
    vectors = matrices.new_empty(batch, size, size).mT
    parts = zip(*(t.tensor_split(chunks) for t in (matrices, values, vectors)), strict=True)
    pending = [pool.submit(torch.linalg.eigh, m, out=(v, q)) for m, v, q in parts]
    for future in pending:
        future.result()
    return values, vectors
