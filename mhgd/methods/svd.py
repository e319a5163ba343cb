"""Feature-map compression by singular vectors (method.md section 2), shared by MHGD and KD-SVD.

Each map X (N x C x H x W) is read per sample as the HW x C matrix M (no mean-centering); its
top right singular vectors are unit vectors in channel space. They are the eigenvectors of the
smaller of the two Gram matrices, M^T M (C x C) or M M^T (HW x HW): at the paper's sensing
points that is at most 128 x 128, and 3-4x faster than an SVD of M (see
benchmarks/bench_compression.py). The Gram matrix squares the spread of the singular values:
float32 matches a float32 SVD's accuracy unless that spread is large, and then float64 is used
(``_solve``). The result comes back in the input dtype.

The backward pass is written out (``_TopSingularVectors``) because the generic eigh/svd
backward divides by every eigenvalue gap, including the gaps between discarded, repeated
eigenvalues (zero channels after ReLU, HW < C), and so returns NaN for ordinary feature maps.
Only the gaps that touch a returned vector enter here; the ones that are zero are the truly
undefined terms, which are set to zero (as the authors' code does) and counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

TEACHER_VECTORS = 1
STUDENT_VECTORS = 4  # (code) the student offers 4 candidates, aligned to the teacher's one


class ZeroedGradientCounter:
    """Counts the compression's gradient terms that were undefined or non-finite and set to zero.

    The count stays on the tensors' device so backward never waits for it; ``take`` reads and
    resets it, once per logging step. A lock makes it safe for autograd's worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total: Tensor | int = 0

    def add(self, count: Tensor) -> None:
        with self._lock:
            self._total = self._total + count

    def take(self) -> int:
        with self._lock:
            total, self._total = self._total, 0
        return int(total)


# The process-wide default; the trainer logs ``ZEROED_GRADIENTS.take()``.
ZEROED_GRADIENTS = ZeroedGradientCounter()


def _sum_is_non_negative(vectors: Tensor) -> Tensor:
    return torch.where(vectors.sum(dim=1, keepdim=True) < 0, -vectors, vectors)


def _largest_entry_is_positive(vectors: Tensor) -> Tensor:
    largest = vectors.gather(1, vectors.abs().argmax(dim=1, keepdim=True))
    return torch.where(largest < 0, -vectors, vectors)


def _solver_sign(vectors: Tensor) -> Tensor:
    return vectors


# (choice) How the teacher's vector, whose sign an SVD leaves arbitrary, is made unique.
# "sum" is the default of method.md; "none" keeps whatever the solver returns, as the authors'
# code does.
SIGN_RULES: dict[str, Callable[[Tensor], Tensor]] = {
    "sum": _sum_is_non_negative,
    "max_abs": _largest_entry_is_positive,
    "none": _solver_sign,
}


def _check_feature_maps(features: Tensor) -> None:
    if features.dim() != 4:
        raise ValueError(
            f"expected feature maps of shape (N, C, H, W), got shape {tuple(features.shape)}; "
            "pass the sensed maps themselves, not flattened vectors"
        )
    if not features.is_floating_point():
        raise TypeError(f"feature maps must be floating point, got {features.dtype}")


def _channel_matrix(features: Tensor, dtype: torch.dtype) -> Tensor:
    """(N, C, H, W) -> X = M^T of shape (N, C, HW)."""
    n, c, h, w = features.shape
    return features.reshape(n, c, h * w).to(dtype)


def _tolerance(values: Tensor) -> Tensor:
    """Per sample, the eigenvalue (and eigenvalue gap) below which nothing is resolved.

    The Gram matrix and its eigh carry an absolute eigenvalue error of a few n * eps *
    lambda_max; below that a gap or an eigenvalue is numerically zero.
    """
    size = values.shape[-1]
    return size * torch.finfo(values.dtype).eps * values[:, :1].clamp_min(0)


def _descending_eigh(gram: Tensor) -> tuple[Tensor, Tensor]:
    diagonal = gram.diagonal(dim1=-2, dim2=-1)  # sums of squares: any NaN/inf shows here
    if not bool(torch.isfinite(diagonal).all()):
        raise ValueError(
            "feature maps contain NaN or inf, so their singular vectors are undefined; "
            "the network has diverged (lower the learning rate or check the inputs)"
        )
    values, vectors = torch.linalg.eigh(gram)
    return values.flip(-1), vectors.flip(-1)


def _top_vectors(channel_matrix: Tensor, k: int) -> dict[str, Tensor]:
    """Top-k right singular vectors of M from the smaller Gram matrix, plus what backward needs.

    A vector whose singular value is zero (rank below k, an all-zero map) is returned as zeros:
    the map has no such direction, and any unit vector would be an arbitrary invention.
    """
    channels, positions = channel_matrix.shape[1:]
    if positions >= channels:
        # M^T M = X X^T (C x C): its eigenvectors are the right singular vectors.
        values, vectors = _descending_eigh(channel_matrix @ channel_matrix.mT)
        present = values[:, :k] > _tolerance(values)
        top = vectors[..., :k] * present.unsqueeze(1)
        return {"values": values, "vectors": vectors, "present": present, "top": top}
    # M M^T = X^T X (HW x HW): its eigenvectors are the left singular vectors u, and
    # v = M^T u / sigma, with sigma = ||M^T u|| for an exactly unit-length v.
    values, vectors = _descending_eigh(channel_matrix.mT @ channel_matrix)
    present = values[:, :k] > _tolerance(values)
    scaled = channel_matrix @ vectors[..., :k]
    lengths = torch.where(present, scaled.norm(dim=1), 1.0)
    top = scaled / lengths.unsqueeze(1) * present.unsqueeze(1)
    return {
        "values": values,
        "vectors": vectors,
        "present": present,
        "top": top,
        "lengths": lengths,
    }


# float32 Gram eigenvectors are off by about sigma_1 / (2 sigma_j) times a float32 SVD's error,
# because the Gram matrix squares the spread of the singular values. A batch in which some
# sample's k-th eigenvalue is below this fraction of its first (sigma_k < 3% of sigma_1) is
# redone in float64. (choice, numerical)
FLOAT32_EIGENVALUE_RANGE = 1e-3


def _check_compute_dtype(requested: torch.dtype | None) -> None:
    if requested not in (None, torch.float32, torch.float64):
        raise ValueError(
            f"compute_dtype must be None (automatic), torch.float32 or torch.float64, "
            f"got {requested}"
        )


def _needs_float64(values: Tensor, k: int) -> bool:
    strongest = values[:, 0]
    return bool(((values[:, k - 1] < FLOAT32_EIGENVALUE_RANGE * strongest) & (strongest > 0)).any())


def _solve(
    features: Tensor, k: int, requested: torch.dtype | None
) -> tuple[dict[str, Tensor], torch.dtype]:
    """The top-k vectors in the precision they need, and that precision.

    Automatic (``requested`` None): float64 maps in float64; others in float32 (a float32 map
    is only known to float32 precision, and the float32 Gram route matches a float32 SVD's
    deviation from a float64 SVD, see benchmarks/bench_compression.py), unless the spectrum is
    too spread for float32 (``FLOAT32_EIGENVALUE_RANGE``).
    """
    automatic = requested is None
    dtype = requested or (torch.float64 if features.dtype == torch.float64 else torch.float32)
    with torch.autocast(features.device.type, enabled=False):
        result = _top_vectors(_channel_matrix(features, dtype), k)
        if automatic and dtype == torch.float32 and _needs_float64(result["values"], k):
            dtype = torch.float64
            result = _top_vectors(_channel_matrix(features, dtype), k)
    return result, dtype


def _eigenvector_backward(
    values: Tensor, vectors: Tensor, grad_top: Tensor, counter: ZeroedGradientCounter
) -> Tensor:
    """Gradient w.r.t. a symmetric matrix G from the gradient of its top-k eigenvectors.

    First-order perturbation: dq_j = sum_{a != j} q_a (q_a^T dG q_j) / (lambda_j - lambda_a).
    Terms with a zero gap are undefined; they are dropped and counted when they carry gradient.
    """
    k = grad_top.shape[-1]
    projected = vectors.mT @ grad_top  # [a, j] = q_a^T g_j
    gaps = values[:, None, :k] - values[:, :, None]  # [a, j] = lambda_j - lambda_a
    resolvable = gaps.abs() > _tolerance(values).unsqueeze(-1)
    inverse_gaps = torch.where(resolvable, 1.0 / torch.where(resolvable, gaps, 1.0), 0.0)
    off_diagonal = ~torch.eye(values.shape[1], k, dtype=torch.bool, device=values.device)
    counter.add((~resolvable & off_diagonal & (projected != 0)).sum())
    weighted = vectors @ (inverse_gaps * projected) @ vectors[..., :k].mT
    return 0.5 * (weighted + weighted.mT)


def _zero_non_finite(grad: Tensor, counter: ZeroedGradientCounter) -> Tensor:
    """Zero and count non-finite entries; a per-sample sum finds them without a full scan."""
    if bool(torch.isfinite(grad.sum(dim=tuple(range(1, grad.dim())))).all()):
        return grad
    finite = torch.isfinite(grad)
    counter.add((~finite).sum())
    return torch.where(finite, grad, 0.0)


class _TopSingularVectors(torch.autograd.Function):
    """Top-k right singular vectors (N, C, k) of (N, C, H, W) maps with a finite backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        features: Tensor,
        k: int,
        compute_dtype: torch.dtype | None,
        counter: ZeroedGradientCounter,
    ) -> Tensor:
        result, ctx.compute_dtype = _solve(features, k, compute_dtype)
        ctx.counter = counter
        ctx.from_left_vectors = "lengths" in result
        saved = [result["values"], result["vectors"], result["present"], result["top"]]
        if ctx.from_left_vectors:
            saved.append(result["lengths"])
        ctx.save_for_backward(features, *saved)
        return result["top"].to(features.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        features, values, vectors, present, top, *lengths = ctx.saved_tensors
        counter: ZeroedGradientCounter = ctx.counter
        grad_top = grad_output.to(ctx.compute_dtype)
        # A vector of a zero singular value is a constant zero: its gradient is undefined.
        counter.add((~present & (grad_top != 0).any(dim=1)).sum())
        grad_top = grad_top * present.unsqueeze(1)
        with torch.autocast(features.device.type, enabled=False):
            channel_matrix = _channel_matrix(features, ctx.compute_dtype)
            if not ctx.from_left_vectors:
                grad_gram = _eigenvector_backward(values, vectors, grad_top, counter)
                grad_matrix = 2.0 * grad_gram @ channel_matrix  # G = X X^T
            else:
                k = grad_top.shape[-1]
                # v = y / ||y|| with y = X u
                radial = (top * grad_top).sum(dim=1, keepdim=True)
                grad_scaled = (grad_top - top * radial) / lengths[0].unsqueeze(1)
                grad_left = channel_matrix.mT @ grad_scaled
                grad_gram = _eigenvector_backward(values, vectors, grad_left, counter)
                grad_matrix = grad_scaled @ vectors[..., :k].mT + 2.0 * channel_matrix @ grad_gram
        grad = grad_matrix.to(features.dtype).reshape(features.shape)
        return _zero_non_finite(grad, counter), None, None, None


def _effective_count(features: Tensor, k: int) -> int:
    if k < 1:
        raise ValueError(f"the number of singular vectors k must be >= 1, got {k}")
    _, channels, height, width = features.shape
    return min(k, channels, height * width)


def teacher_vectors(
    features: Tensor, sign: str = "sum", compute_dtype: torch.dtype | None = None
) -> Tensor:
    """The teacher's top right singular vector per sample, (N, C), never differentiated.

    ``sign`` picks the rule that fixes its arbitrary sign (see ``SIGN_RULES``).
    """
    _check_feature_maps(features)
    if sign not in SIGN_RULES:
        raise ValueError(f"unknown sign rule {sign!r}; choose one of {sorted(SIGN_RULES)}")
    _check_compute_dtype(compute_dtype)
    with torch.no_grad():
        top = _solve(features, TEACHER_VECTORS, compute_dtype)[0]["top"][..., 0]
        return SIGN_RULES[sign](top).to(features.dtype)


def student_vectors(
    features: Tensor,
    teacher: Tensor,
    k: int = STUDENT_VECTORS,
    counter: ZeroedGradientCounter = ZEROED_GRADIENTS,
    compute_dtype: torch.dtype | None = None,
) -> Tensor:
    """The student's vector per sample, (N, C), aligned to the teacher's and differentiable.

    Of the top k right singular vectors (k is capped at min(C, HW)), keeps the one with the
    largest |cosine| to the teacher's vector and flips it to a positive cosine (code). Undefined
    gradient terms are zeroed and added to ``counter``.
    """
    _check_feature_maps(features)
    _check_compute_dtype(compute_dtype)
    n, channels = features.shape[:2]
    if teacher.shape != (n, channels):
        raise ValueError(
            f"teacher vectors have shape {tuple(teacher.shape)} but the student maps need "
            f"({n}, {channels}): teacher and student must sense the same channel count "
            "(method.md section 2)"
        )
    candidates = _TopSingularVectors.apply(
        features, _effective_count(features, k), compute_dtype, counter
    )
    cosines = torch.einsum("nck,nc->nk", candidates, teacher.detach().to(candidates.dtype))
    best = cosines.abs().argmax(dim=1, keepdim=True)
    chosen = candidates.gather(2, best.unsqueeze(1).expand(-1, channels, -1)).squeeze(2)
    flip = torch.where(cosines.gather(1, best) < 0, -1.0, 1.0).to(chosen.dtype)
    return chosen * flip
