"""Side-by-side timing: variants run round-robin so a noisy machine slows them alike."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from mhgd.engine.host_memory import keep_freed_host_memory


def interleaved_rounds(
    variants: dict[str, Callable[[], None]], *, rounds: int, steps: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each variant in every round, after one warm-up call each.

    Round r of one variant ran right beside round r of the others, so their ratios per round
    are paired: a slow spell of the machine hits both sides of a ratio alike.
    """

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
    return times


def interleaved(
    variants: dict[str, Callable[[], None]], *, rounds: int, steps: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each variant (``interleaved_rounds``)."""
    times = interleaved_rounds(variants, rounds=rounds, steps=steps, device=device)
    return {name: statistics.median(values) for name, values in times.items()}


def heap_as_in_training(device: torch.device, glibc_default: bool) -> str:
    """Keep freed heap memory as CPU training does (mhgd.engine.host_memory), unless
    ``glibc_default``; returns what was done, for the benchmark's header."""
    if device.type != "cpu":
        return "heap: not used (device memory)"
    if glibc_default:
        return "heap: glibc's default (freed memory trimmed)"
    return "heap: kept, as in training" if keep_freed_host_memory() else "heap: default (no glibc)"


def add_heap_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--glibc-heap",
        action="store_true",
        help="on CPU, leave glibc's heap trimming on (CPU training keeps freed memory)",
    )


def add_step_options(parser: argparse.ArgumentParser, *, rounds: int, steps: int) -> None:
    """The options of the step benchmarks: sizes, timing rounds, device and heap."""
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=steps, help="steps per timing")
    parser.add_argument("--device", default="cpu")
    add_heap_option(parser)


def step_device(args: argparse.Namespace) -> torch.device:
    """The device to time on, its heap kept as in training; prints the run's header."""
    device = torch.device(args.device)
    heap = heap_as_in_training(device, args.glibc_heap)
    print(f"device {device}, batch {args.batch}, width {args.width}, torch {torch.__version__}")
    print(heap)
    return device
