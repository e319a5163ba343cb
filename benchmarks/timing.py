"""Side-by-side timing: variants run round-robin so a noisy machine slows them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def interleaved(
    variants: dict[str, Callable[[], None]], *, rounds: int, steps: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each variant, after one warm-up call each."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for call in variants.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, call in variants.items():
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                call()
            sync()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}
