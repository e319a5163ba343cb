"""Feature-map compression by singular vectors (method.md section 2), shared by MHGD and KD-SVD.

Each map X (N x C x H x W) is read per sample as the HW x C matrix M (no mean-centering); its
top right singular vectors are unit vectors in channel space. They are the eigenvectors of the
smaller of the two Gram matrices, M^T M (C x C) or M M^T (HW x HW): at the paper's sensing
points that is at most 128 x 128, and several times faster than an SVD of M (see
benchmarks/bench_compression.py). On the CPU a batch's eigendecompositions are spread over
the cores (``mhgd.methods.cpu_eigh``).

Precision without host reads (``_solve``). The Gram matrix squares the spread of the singular
values, so a float32 eigendecomposition alone loses the student's 4th vector when its singular
value is below ~3% of the first. Instead of checking the spectrum on the host and redoing the
batch in float64 (a device-to-host read every step), the automatic policy is the same for
every batch: the float32 eigenvectors start one subspace iteration on a block of k + 2 vectors
through M itself (never through the Gram matrix, whose rounding is what lost them), followed by
a Rayleigh-Ritz step; that recovers the top k to the accuracy of a float32 SVD at the cost of a
few thin float32 products and a float64 (k + 2) x (k + 2) problem. The teacher's single vector
needs no full eigendecomposition at all (``_top_vector``): a few squarings of the Gram matrix
and a small Krylov space give it at least as accurately as a float32 SVD, 3-4x faster than the
eigensolver.

Non-finite maps are guarded on the device: the eigensolver sees zeros, the sample's vectors
come out NaN (so the loss shows the divergence) and its gradient is zeroed and counted. One
read remains that this module cannot remove: torch's eigh checks its solver's error codes on
the host after every call (``_linalg_check_errors``), so on a GPU each eigh call (the student's
two per sensing point, the teacher's one small Ritz problem) waits for the queue; only an
eigensolver written in tensor operations would avoid it.

The backward pass is written out (``_AlignedSingularVector``) because the generic eigh/svd
backward divides by every eigenvalue gap, including the gaps between discarded, repeated
eigenvalues (zero channels after ReLU, HW < C), and so returns NaN for ordinary feature maps.
Only the gaps that touch the student's kept vector enter here (the choice among the k
candidates is made inside the function, so the other k - 1 cost the backward nothing); the ones
that are zero are the truly undefined terms, which are set to zero (as the authors' code does)
and counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from mhgd.methods.cpu_eigh import eigh as cpu_eigh

TEACHER_VECTORS = 1
STUDENT_VECTORS = 4  # (code) the student offers 4 candidates, aligned to the teacher's one


class ZeroedGradientCounter:
    """Counts the compression's gradient terms that were undefined or non-finite and set to zero.

    The count stays on the tensors' device so backward never waits for it; ``take`` returns it
    (still on the device: the training loop reads its statistics once per epoch) and resets
    it. A lock makes it safe for autograd's worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total: Tensor | int = 0

    def add(self, count: Tensor) -> None:
        with self._lock:
            self._total = self._total + count

    def take(self) -> Tensor:
        with self._lock:
            total, self._total = self._total, 0
        return torch.as_tensor(total)


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
    lambda_max; below that a gap or an eigenvalue is numerically zero. ``values`` ascend.
    """
    size = values.shape[-1]
    return size * torch.finfo(values.dtype).eps * values[:, -1:].clamp_min(0)


def _ascending_eigh(gram: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Eigenpairs in the solver's ascending order, and which samples were finite (decided on
    the device). The top k are the last k columns: the basis is kept in this order because
    reversing it would copy it whole.

    A non-finite Gram matrix (NaN/inf maps: a diverged network) would make the eigensolver
    fail; its sample is solved as zeros instead and flagged (in ``gram``, which is overwritten).
    """
    finite = torch.isfinite(gram.diagonal(dim1=-2, dim2=-1)).all(dim=-1)  # sums of squares
    values, vectors = cpu_eigh(gram.masked_fill_(~finite[:, None, None], 0.0))
    return values, vectors, finite


# (choice, numerical) The automatic policy refines the top k together with this many more
# vectors: with k + 2, one subspace iteration brings the top k of spread spectra
# (sigma_j = 10^-j) to a float32 SVD's accuracy (benchmarks/bench_compression.py: worst
# 1 - |cos| <= 2.6e-7, where torch's float32 SVD gives up to 6.8e-7; a block of 2k was as
# accurate and 1.4-1.8 ms slower per VGG step).
REFINED_EXTRA_VECTORS = 2


def _column(matrices: Tensor, column: Tensor) -> Tensor:
    """Column ``column[i]`` of each matrix i, (N, rows, 1)."""
    return matrices.gather(2, column[:, None, :].expand(-1, matrices.shape[1], 1))


def _thin_product(thin: Tensor, wide: Tensor) -> Tensor:
    """thin^T @ wide for a few columns ``thin`` (N, n, b) and a wide ``wide`` (N, n, m), (N, b, m).

    Every product with a thin factor here is written with that factor first, on the left:
    MKL's batched products are fast for a few rows and slow for a few columns. Measured at
    batch 128 on CPU: a matrix-vector product 0.23 -> 0.04 ms (64 x 64) and 1.0 -> 0.12 ms
    (128 x 128), a 64 x 256 transposed view times 8 columns 2.2 -> 0.3 ms.
    """
    return thin.mT @ wide


def _times_thin(wide: Tensor, thin: Tensor) -> Tensor:
    """wide @ thin for a few columns ``thin``, as (thin^T wide^T)^T (see ``_thin_product``)."""
    return (thin.mT @ wide.mT).mT


def _refined(
    small: Tensor, values: Tensor, vectors: Tensor, finite: Tensor, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The top k eigenpairs refined and swapped into the (ascending) basis, in place.

    ``small`` is the (N, n, m) matrix Y whose Gram Y Y^T was decomposed. One subspace iteration
    on the top k + 2 vectors B, taken as two half-steps through Y itself (Y^T B, then Y times its
    orthonormal basis), and Rayleigh-Ritz on the result. A product with Y spreads rounding
    errors by sigma_1 / sigma_j, where one with the Gram matrix spreads them by its square: so
    float32 products suffice, and only the small Ritz problem is solved in float64. Returns the
    values (float64), the basis (``vectors``, with the other vectors made orthogonal to the
    refined ones, for the backward) and the refined top k, ascending like the basis.
    """
    size = values.shape[-1]
    block_size = min(size, k + REFINED_EXTRA_VECTORS)
    right = torch.linalg.qr(_thin_product(vectors[..., size - block_size :], small).mT).Q
    left = torch.linalg.qr(_times_thin(small, right)).Q
    projected = _thin_product(left, small).double()  # (Y^T Q)^T
    ritz = torch.where(finite[:, None, None], projected @ projected.mT, 0.0)
    ritz_values, ritz_vectors = torch.linalg.eigh(ritz)
    top = (left.double() @ ritz_vectors[..., block_size - k :]).to(vectors.dtype)
    rest = vectors[..., : size - k]
    rest.sub_(top @ _thin_product(top, rest))
    vectors[..., size - k :] = top
    all_values = torch.cat([values[:, : size - k].double(), ritz_values[:, block_size - k :]], -1)
    return all_values, vectors, top


def _top_vectors(channel_matrix: Tensor, k: int, refine: bool) -> dict[str, Tensor]:
    """Top-k right singular vectors of M from the smaller Gram matrix, plus what backward needs.

    A vector whose singular value is zero (rank below k, an all-zero map) is returned as zeros:
    the map has no such direction, and any unit vector would be an arbitrary invention. With
    ``refine`` the top k are refined through M (``_refined``) and their eigenvalues come out in
    float64, so that the backward's gaps are resolved. ``values`` and ``vectors`` (the whole
    basis, for the backward) ascend; ``top``, ``present`` and ``lengths`` hold the k candidates,
    largest first.
    """
    channels, positions = channel_matrix.shape[1:]
    from_left_vectors = positions < channels
    # Y with Gram Y Y^T: X (C x HW) gives M^T M, whose eigenvectors are the right singular
    # vectors; X^T gives M M^T, whose eigenvectors u are the left ones, and then
    # v = M^T u / sigma, with sigma = ||M^T u|| for an exactly unit-length v.
    small = channel_matrix.mT if from_left_vectors else channel_matrix
    values, vectors, finite = _ascending_eigh(small @ small.mT)
    size = values.shape[-1]
    top_k = vectors[..., size - k :]
    if refine:
        values, vectors, top_k = _refined(small, values, vectors, finite, k)
    top_k = top_k.flip(-1)  # largest first: the candidates' order (k columns, a small copy)
    present = values[:, size - k :].flip(-1) > _tolerance(values)
    result = {"values": values, "vectors": vectors, "present": present}
    if not from_left_vectors:
        top = top_k * present.unsqueeze(1)
    else:
        scaled = _times_thin(channel_matrix.to(top_k.dtype), top_k)
        lengths = torch.where(present, scaled.norm(dim=1), 1.0)
        top = scaled / lengths.unsqueeze(1) * present.unsqueeze(1)
        result["lengths"] = lengths
    # A non-finite map has no singular vectors: NaN makes the loss show it.
    result["top"] = torch.where(finite[:, None, None], top, torch.nan)
    return result


# (choice, numerical) Up to this Gram size (the paper's 4x4 and 2x2 points) a float64
# eigendecomposition is cheaper than the float32 one plus its refinement (the student's k = 4).
SMALL_GRAM = 32

# (choice, numerical) The teacher's vector: the Gram matrix G is squared this many times (G^8
# separates lambda_1 from lambda_2 even at lambda_2 / lambda_1 = 0.9), then the top Ritz vector
# of G in the Krylov space of G^8 of this size is taken, in float64. Limit: as accurate as a
# float32 SVD up to sigma_2 / sigma_1 ~ 0.97; closer, with a flat rest of the spectrum, it
# degrades (worst 1 - |cos| 1e-4 at 0.98, 3e-2 at 0.99, where a float32 SVD stays at 4e-7).
# Post-ReLU maps have a dominant sigma_1 (VGG's random-init points: sigma_2 / sigma_1 ~ 0.26).
SQUARINGS = 3
KRYLOV_SIZE = 6


def _top_vector(channel_matrix: Tensor) -> dict[str, Tensor]:
    """The top right singular vector of M without a full eigendecomposition (no gradient)."""
    channels, positions = channel_matrix.shape[1:]
    from_left_vectors = positions < channels
    small = channel_matrix.mT if from_left_vectors else channel_matrix
    gram = small @ small.mT
    finite = torch.isfinite(gram.diagonal(dim1=-2, dim2=-1)).all(dim=-1)
    gram.masked_fill_(~finite[:, None, None], 0.0)
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(dim=-1)  # >= lambda_1: keeps G^8 <= 1
    power = gram / trace.clamp_min(torch.finfo(gram.dtype).tiny)[:, None, None]
    for _ in range(SQUARINGS):
        power = power @ power
    # Start from the column of G^8 with the largest diagonal entry: nearly the top vector.
    start = power.diagonal(dim1=-2, dim2=-1).argmax(dim=-1)
    column = _column(power, start[:, None])
    krylov = []
    for _ in range(min(KRYLOV_SIZE, gram.shape[-1])):
        column = column / column.norm(dim=1, keepdim=True).clamp_min(torch.finfo(gram.dtype).tiny)
        krylov.append(column)
        column = _times_thin(power, column)
    basis = torch.linalg.qr(torch.cat(krylov, dim=-1).double()).Q
    # B^T G in float32, never a float64 copy of G: its rounding (eps * lambda_1) moves the top
    # Ritz vector by about eps * lambda_1 / (lambda_1 - lambda_2), far below a float32 SVD's error.
    ritz = _thin_product(basis.to(gram.dtype), gram).double() @ basis
    ritz_values, ritz_vectors = torch.linalg.eigh(ritz)
    top = (basis @ ritz_vectors[..., -1:]).to(channel_matrix.dtype)
    if from_left_vectors:  # v = M^T u / ||M^T u||, a product that loses nothing in float32
        top = _times_thin(channel_matrix, top)
        top = top / top.norm(dim=1, keepdim=True).clamp_min(torch.finfo(top.dtype).tiny)
    present = ritz_values[:, -1:] > 0  # an all-zero map has no direction
    top = top * present.unsqueeze(1)
    return {"top": torch.where(finite[:, None, None], top, torch.nan)}


def _check_compute_dtype(requested: torch.dtype | None) -> None:
    if requested not in (None, torch.float32, torch.float64):
        raise ValueError(
            f"compute_dtype must be None (automatic), torch.float32 or torch.float64, "
            f"got {requested}"
        )


def _solve(
    features: Tensor, k: int, requested: torch.dtype | None, backward: bool = False
) -> tuple[dict[str, Tensor], torch.dtype]:
    """The top-k vectors in the precision they need, and the dtype for the backward's products.

    Automatic (``requested`` None): float64 maps by a float64 eigendecomposition; for float32
    maps, one vector without ``backward`` (the teacher's) by iteration (``_top_vector``), more
    by a float64 eigendecomposition where the smaller Gram matrix is at most ``SMALL_GRAM`` wide
    and otherwise by a float32 one with the top k refined through M (see the module
    docstring). The policy depends only on the dtype and the shapes, never on the values, so
    it costs no device-to-host read. Forced dtypes use the eigendecomposition.
    """
    dtype = requested or (torch.float64 if features.dtype == torch.float64 else torch.float32)
    _, channels, height, width = features.shape
    with torch.autocast(features.device.type, enabled=False):
        if requested is None and k == 1 and not backward and dtype == torch.float32:
            result = _top_vector(_channel_matrix(features, dtype))
            return result, result["top"].dtype
        if requested is None and min(channels, height * width) <= SMALL_GRAM:
            dtype = torch.float64  # small Gram matrices: float64 costs less than refining
        matrix = _channel_matrix(features, dtype)
        result = _top_vectors(matrix, k, refine=requested is None and dtype == torch.float32)
    # The backward's products run in the maps' precision (a forced dtype's when one is given);
    # its gap decisions use ``values``, which keep the solver's precision.
    return result, dtype if requested is not None else features.dtype


def _eigenvector_backward(
    values: Tensor,
    vectors: Tensor,
    grad_vector: Tensor,
    column: Tensor,
    counter: ZeroedGradientCounter,
) -> Tensor:
    """The gradient w.r.t. a symmetric G from that of one eigenvector per sample, as a factor A.

    First-order perturbation: dq_j = sum_{a != j} q_a (q_a^T dG q_j) / (lambda_j - lambda_a),
    so the gradient is sym(a q_j^T) with a = Q (f o Q^T g), f_a = 1 / (lambda_j - lambda_a):
    returned as a (N, n, 1), never formed as an n x n matrix. ``column`` (N, 1) is j, the
    eigenvector that carries gradient. Terms with a zero gap are undefined; they are dropped and
    counted when they carry gradient.
    """
    projected = _thin_product(vectors, grad_vector)  # [a] = q_a^T g
    gaps = values.gather(1, column)[:, None, :] - values[:, :, None]  # [a] = lambda_j - lambda_a
    resolvable = gaps.abs() > _tolerance(values).unsqueeze(-1)
    inverse_gaps = torch.where(resolvable, 1.0 / torch.where(resolvable, gaps, 1.0), 0.0)
    inverse_gaps = inverse_gaps.to(projected.dtype)
    indices = torch.arange(values.shape[1], device=values.device)
    off_diagonal = indices[None, :, None] != column[:, None, :]
    counter.add((~resolvable & off_diagonal & (projected != 0)).sum())
    return _times_thin(vectors, inverse_gaps * projected)


def _gram_factor_gradient(factor: Tensor, top: Tensor, small: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient w.r.t. Y of G = Y Y^T when G's gradient is sym(a q^T): (a q^T + q a^T) Y.

    Returned as the two factors of [a q] [q a]^T Y, thin products instead of an n x n
    matrix times Y.
    """
    return torch.cat([factor, top], dim=-1), _thin_product(torch.cat([top, factor], -1), small)


def _finite_factors(
    left: Tensor, right: Tensor, counter: ZeroedGradientCounter
) -> tuple[Tensor, Tensor]:
    """The factors of the maps' gradient left @ right, with every sample whose factors hold a
    non-finite entry zeroed and counted.

    A non-finite map or upstream gradient reaches the factors (the map is in one of them, the
    upstream gradient in the other) and leaves the whole sample's gradient meaningless; a sum
    per sample finds it (NaN and inf propagate). Testing and zeroing the thin factors, never
    the map-sized product, spares two passes over the gradient.
    """
    broken = ~torch.isfinite(left.sum(dim=(1, 2)) + right.sum(dim=(1, 2)))
    counter.add(broken.sum() * left.shape[1] * right.shape[2])
    keep = ~broken[:, None, None]
    return torch.where(keep, left, 0.0), torch.where(keep, right, 0.0)


def _map_gradient(left: Tensor, right: Tensor, like: Tensor) -> Tensor:
    """left @ right ((N, C, HW) per sample) as a tensor of its own shaped, typed and laid out
    like the maps ``like``.

    Not a reshaped view of the product: autograd adds the network's gradient of the map into a
    tensor of its own in place, into a view out of place (9.8 instead of 1.9 ms per
    32 x 32 x 64 map of WRN's step). A channels_last map gets a channels_last gradient, each
    sample's contiguous HW x C transpose written as R^T L^T.
    """
    n, c, h, w = like.shape
    channels_last = not like.is_contiguous() and like.is_contiguous(
        memory_format=torch.channels_last
    )
    layout = torch.channels_last if channels_last else torch.contiguous_format
    grad = torch.empty_like(like, memory_format=layout)
    if channels_last:
        out, left, right = grad.permute(0, 2, 3, 1).view(n, h * w, c), right.mT, left.mT
    else:
        out = grad.view(n, c, h * w)
    if left.dtype == out.dtype:
        torch.matmul(left, right, out=out)
    else:  # a forced compute dtype: the product in it, then rounded to the maps' dtype
        out.copy_(left @ right)
    return grad


def _aligned_choice(candidates: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample, which candidate has the largest |cosine| with the teacher's vector (N, 1),
    and the sign (N, 1) that makes that cosine positive (code)."""
    cosines = torch.einsum("nck,nc->nk", candidates, teacher.to(candidates.dtype))
    best = cosines.abs().argmax(dim=1, keepdim=True)
    sign = torch.where(cosines.gather(1, best) < 0, -1.0, 1.0).to(candidates.dtype)
    return best, sign


class _AlignedSingularVector(torch.autograd.Function):
    """The student's vector: of the top-k right singular vectors of (N, C, H, W) maps, the one
    aligned to the teacher's, (N, C), with a finite backward.

    The choice is made here, not after, so that the backward works on the kept vector alone:
    its factors are one column wide instead of k (the others get no gradient).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        features: Tensor,
        teacher: Tensor,
        k: int,
        compute_dtype: torch.dtype | None,
        counter: ZeroedGradientCounter,
    ) -> Tensor:
        result, ctx.compute_dtype = _solve(features, k, compute_dtype, backward=True)
        ctx.counter = counter
        ctx.from_left_vectors = "lengths" in result
        best, sign = _aligned_choice(result["top"].to(features.dtype), teacher)
        kept = _column(result["top"], best)  # (N, C, 1); only its presence and length are saved
        column = result["values"].shape[-1] - 1 - best  # its place in the ascending basis
        dtype = ctx.compute_dtype  # the values keep their (refined) precision
        saved = [result["values"], result["vectors"].to(dtype), result["present"].gather(1, best)]
        saved += [column, sign, kept.to(dtype)]
        if ctx.from_left_vectors:
            saved.append(result["lengths"].gather(1, best).to(dtype))
        ctx.save_for_backward(features, *saved)
        return kept[..., 0].to(features.dtype) * sign

    @staticmethod
    @once_differentiable  # written out, not differentiable again: a second order is an error
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        features, values, vectors, present, column, sign, top, *lengths = ctx.saved_tensors
        counter: ZeroedGradientCounter = ctx.counter
        # The heads' backward hands this gradient over transposed (batch stride 1); a batched
        # product needs each sample's entries together, else torch loops over the samples
        # (VGG's step: three 1.0-1.3 ms products, against 0.05 ms batched).
        grad_top = (grad_output.contiguous() * sign).to(ctx.compute_dtype).unsqueeze(-1)
        # A vector of a zero singular value is a constant zero: its gradient is undefined.
        counter.add((~present & (grad_top != 0).any(dim=1)).sum())
        grad_top = grad_top * present.unsqueeze(1)
        with torch.autocast(features.device.type, enabled=False):
            channel_matrix = _channel_matrix(features, ctx.compute_dtype)
            vector = _column(vectors, column)  # the kept eigenvector q (u in the left case)
            if not ctx.from_left_vectors:  # G = X X^T
                factor = _eigenvector_backward(values, vectors, grad_top, column, counter)
                left, right = _gram_factor_gradient(factor, vector, channel_matrix)
            else:  # G = X^T X, and v = y / ||y|| with y = X u
                radial = (top * grad_top).sum(dim=1, keepdim=True)
                grad_scaled = (grad_top - top * radial) / lengths[0].unsqueeze(1)
                grad_left = _thin_product(grad_scaled, channel_matrix).mT  # X^T g
                factor = _eigenvector_backward(values, vectors, grad_left, column, counter)
                # g u^T from y = X u, X (u a^T + a u^T) from G = X^T X: one product
                # [g, X u, X a] [u, a, u]^T, already shaped like X (no transposed sum).
                through_maps = _times_thin(channel_matrix, torch.cat([vector, factor], -1))
                left = torch.cat([grad_scaled, through_maps], dim=-1)
                right = torch.cat([vector, factor, vector], dim=-1).mT
            grad = _map_gradient(*_finite_factors(left, right, counter), features)
        return grad, None, None, None, None


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
    return _AlignedSingularVector.apply(
        features, teacher.detach(), _effective_count(features, k), compute_dtype, counter
    )
