"""Speed and accuracy of the singular-vector compression (method.md section 2) at the paper's sizes.

Times, per sensing point, the teacher's vectors (k = 1, no gradient) plus the student's (k = 4,
aligned, forward and backward) with each method, side by side on the same maps, and measures
how far each method's vectors are from a float64 full SVD (1 - |cos|, worst sample):

- ``svd``: torch.linalg.svd of the HW x C float32 matrix, autograd backward (the baseline);
- ``auto``: mhgd.methods.svd as used: the teacher's vector from Gram squarings and a small
  Krylov space; the student's from eigh of the smaller Gram matrix in float32, its top k
  refined by one subspace iteration through the maps and Rayleigh-Ritz (the same work for
  every batch: no value is read back to decide);
- ``gram32``, ``gram64``: eigh of the Gram matrix for both, forced to float32 or float64.

Two more tables use maps with a spread spectrum, singular values sigma_j = 10^(-j/4) (float32
copes) and 10^(-j) (forced float32 loses the 4th vector, ``auto`` keeps it).

The machine may be shared: every method runs once per round, in turn, and the best round counts.
Freed heap memory is kept as CPU training keeps it (``--glibc-heap``: glibc's default).
Run: python benchmarks/bench_compression.py [--rounds 3] [--batch 128] [--threads N]
"""

from __future__ import annotations

import mhgd  # noqa: F401  (first: it sets OpenMP's spinning as training does, before torch loads)

# isort: split

import argparse
import time
from collections.abc import Callable

import torch
from timing import add_heap_option, heap_as_in_training
from torch import Tensor

from mhgd.methods import svd

SENSING_POINTS = {
    "VGG": [(16, 64), (8, 128), (4, 256), (4, 512), (2, 512)],
    "WRN": [(32, 64), (16, 128), (8, 256)],
}

Method = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def svd_vectors(teacher_maps: Tensor, student_maps: Tensor) -> tuple[Tensor, Tensor]:
    """The baseline: full SVDs, the same sign rule and alignment, torch's SVD backward."""
    with torch.no_grad():
        teacher = torch.linalg.svd(teacher_maps.flatten(2).mT, full_matrices=False).Vh[:, 0]
        teacher = torch.where(teacher.sum(dim=1, keepdim=True) < 0, -teacher, teacher)
    candidates = torch.linalg.svd(student_maps.flatten(2).mT, full_matrices=False).Vh[:, :4]
    cosines = (candidates * teacher.unsqueeze(1)).sum(dim=2)
    best = cosines.abs().argmax(dim=1)
    rows = torch.arange(len(best))
    student = candidates[rows, best] * cosines[rows, best].sign().unsqueeze(1)
    return teacher, student


def gram_vectors(dtype: torch.dtype | None) -> Method:
    def vectors(teacher_maps: Tensor, student_maps: Tensor) -> tuple[Tensor, Tensor]:
        teacher = svd.teacher_vectors(teacher_maps, compute_dtype=dtype)
        return teacher, svd.student_vectors(student_maps, teacher, compute_dtype=dtype)

    return vectors


METHODS: dict[str, Method] = {
    "svd": svd_vectors,
    "auto": gram_vectors(None),
    "gram32": gram_vectors(torch.float32),
    "gram64": gram_vectors(torch.float64),
}


def timed_run(method: Method, teacher_maps: Tensor, student_maps: Tensor) -> float:
    student_maps = student_maps.detach().requires_grad_()
    start = time.perf_counter()
    _, student = method(teacher_maps, student_maps)
    student.sum().backward()
    return time.perf_counter() - start


def deviation(vectors: Tensor, reference: Tensor) -> float:
    """Worst 1 - |cos| over the batch."""
    cosines = (vectors.double() * reference).sum(dim=1).abs()
    return float((1 - cosines).max())


def deviations(method: Method, teacher_maps: Tensor, student_maps: Tensor) -> tuple[float, float]:
    """Teacher and student deviation from the float64 SVD.

    The reference student is aligned to this method's own teacher vectors, so that a teacher
    deviation is not counted twice.
    """
    with torch.no_grad():
        teacher, student = method(teacher_maps, student_maps)
        reference_teacher = float64_candidates(teacher_maps)[:, 0]
        candidates = float64_candidates(student_maps)
        cosines = (candidates * teacher.double().unsqueeze(1)).sum(dim=2)
        best = cosines.abs().argmax(dim=1)
        reference_student = candidates[torch.arange(len(best)), best]
    return deviation(teacher, reference_teacher), deviation(student, reference_student)


def float64_candidates(maps: Tensor) -> Tensor:
    """Top-4 right singular vectors (N, 4, C) by a float64 full SVD."""
    return torch.linalg.svd(maps.double().flatten(2).mT, full_matrices=False).Vh[:, :4]


def post_relu_maps(batch: int, size: int, channels: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(batch, channels, size, size, generator=generator))


def spread_spectrum_maps(
    batch: int, size: int, channels: int, decades_per_value: float, seed: int
) -> Tensor:
    """Maps whose singular values fall by a factor 10 every ``1 / decades_per_value`` steps,
    laid out contiguously like a network's maps (built as M^T they would be channels_last)."""
    generator = torch.Generator().manual_seed(seed)
    rank = min(channels, size * size)
    shape = (batch, size * size, rank), (batch, channels, rank)
    left, right = (torch.linalg.qr(torch.randn(s, generator=generator).double())[0] for s in shape)
    values = 10.0 ** (-decades_per_value * torch.arange(rank, dtype=torch.float64))
    matrix = left * values @ right.mT
    return matrix.mT.reshape(batch, channels, size, size).float().contiguous()


Point = tuple[str, int, int]  # network, map size, channels


def best_times(maps: dict[Point, tuple[Tensor, Tensor]], rounds: int) -> dict[tuple, float]:
    """Best time per (point, method); methods take turns so a busy machine hits all alike."""
    best = {(point, name): float("inf") for point in maps for name in METHODS}
    for _ in range(rounds):
        for point, (teacher_maps, student_maps) in maps.items():
            for name, method in METHODS.items():
                elapsed = timed_run(method, teacher_maps, student_maps)
                best[point, name] = min(best[point, name], elapsed)
    return best


def print_table(title: str, maps: dict[Point, tuple[Tensor, Tensor]], rounds: int) -> None:
    print(f"\n{title}")
    print(
        f"{'point':>14} "
        + " ".join(f"{name + ' ms':>10} {'x svd':>6} {'dev T':>8} {'dev S':>8}" for name in METHODS)
    )
    best = best_times(maps, rounds)
    for point, (teacher_maps, student_maps) in maps.items():
        cells = []
        for name, method in METHODS.items():
            teacher_dev, student_dev = deviations(method, teacher_maps, student_maps)
            seconds, ratio = best[point, name], best[point, "svd"] / best[point, name]
            cells.append(
                f"{seconds * 1e3:10.1f} {ratio:6.2f} {teacher_dev:8.1e} {student_dev:8.1e}"
            )
        net, size, channels = point
        print(f"{net} {size:>2}x{size:<2}x{channels:<3} " + " ".join(cells))
    for net in [*SENSING_POINTS, "all"]:
        summed = {
            name: sum(best[p, name] for p in maps if net in ("all", p[0])) for name in METHODS
        }
        cells = [f"{summed[n] * 1e3:10.1f} {summed['svd'] / summed[n]:6.2f}" for n in METHODS]
        print(f"{net + ' total':>14} " + " ".join(f"{cell} {'':8} {'':8}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    add_heap_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.threads} threads, best of {args.rounds} rounds; times in ms")
    print(heap_as_in_training(torch.device("cpu"), args.glibc_heap))
    print("each: teacher k=1 forward + student k=4 forward and backward")
    print("x svd = speed-up over svd; dev T/S = worst 1 - |cos| of teacher/student vs float64 SVD")
    points = [(net, size, c) for net, sizes in SENSING_POINTS.items() for size, c in sizes]
    relu_maps = {
        point: (
            post_relu_maps(args.batch, *point[1:], seed=2 * i),
            post_relu_maps(args.batch, *point[1:], seed=2 * i + 1),
        )
        for i, point in enumerate(points)
    }
    print_table("post-ReLU random maps", relu_maps, args.rounds)
    for decades in (0.25, 1.0):
        spread_maps = {
            point: (
                spread_spectrum_maps(args.batch, *point[1:], decades, seed=2 * i),
                spread_spectrum_maps(args.batch, *point[1:], decades, seed=2 * i + 1),
            )
            for i, point in enumerate(points)
        }
        print_table(f"spread spectrum, sigma_j = 10^-{decades:g}j", spread_maps, args.rounds)


if __name__ == "__main__":
    main()
