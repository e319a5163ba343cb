"""Training on the CPU: keep freed heap memory in the process for the next step.

A CPU training step frees its activations and allocates them again in the next step. glibc
hands a freed heap top back to the operating system once it is larger than its trim threshold,
so every step maps the same memory in again and page-faults it page by page: for the WRN pair
at batch 128 that was 555k page faults and a quarter of the step's time
(benchmarks/bench_mhgd_step.py). A top pad makes glibc keep that much freed memory instead.
On a GPU the activations live in torch's caching allocator, which keeps them anyway.
"""

from __future__ import annotations

import ctypes
import platform

M_TOP_PAD = -2  # glibc's mallopt parameter: heap kept when trimming, added when growing
# (choice) At most this much freed heap stays with a CPU training process: more than one step
# of the paper's networks at batch 128 frees.
RETAINED_BYTES = 1 << 30


def keep_freed_host_memory() -> bool:
    """Have glibc keep up to ``RETAINED_BYTES`` of freed heap; False where libc is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL(None).mallopt(M_TOP_PAD, RETAINED_BYTES))
