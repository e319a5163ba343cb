"""MHGD's mathematics (method.md sections 3-5): attention heads, estimator, losses, clipping.

Shapes: per module, front vectors V^F (N x D_F) and back vectors V^B (N x D_B) from
``mhgd.methods.svd``; attention logits S (A x N x N) with rows i the back samples and columns j
the front samples. Unit ``a * D2 + d`` of a head projection belongs to head a (the layout is
invisible to the method: heads see i.i.d. initialised, per-unit normalised units). Batch norm
keeps torch's defaults, which are the authors' settings (affine, momentum 0.1 = their decay 0.9,
eps 1e-5) (code).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_HEADS = 8


def hidden_width(d_front: int, d_back: int) -> int:
    """D2 = floor((D_F + D_B) / 2), the per-head width (section 3)."""
    return (d_front + d_back) // 2


def _check_widths(d_front: int, d_back: int, heads: int) -> None:
    for name, value in (("d_front", d_front), ("d_back", d_back), ("heads", heads)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _he_fan_out(linear: nn.Linear) -> nn.Linear:
    """He normal init over fan-out, zero bias: the authors' init for every MHAN layer (code)."""
    nn.init.kaiming_normal_(linear.weight, mode="fan_out", nonlinearity="relu")
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


def _check_vectors(name: str, vectors: Tensor, width: int) -> None:
    if vectors.dim() != 2 or vectors.shape[1] != width:
        raise ValueError(
            f"{name} must have shape (N, {width}), got {tuple(vectors.shape)}; pass one "
            "compressed vector per sample (mhgd.methods.svd)"
        )


class AttentionHeads(nn.Module):
    """A heads of a module: the logits S_a[i, j] = <key_a(v^B_i), query_a(v^F_j)> (section 3).

    Key and query are a bias-free linear layer then batch norm, no activation, no scaling (code).
    """

    def __init__(self, d_front: int, d_back: int, heads: int = DEFAULT_HEADS) -> None:
        super().__init__()
        _check_widths(d_front, d_back, heads)
        self.d_front, self.d_back, self.heads = d_front, d_back, heads
        self.width = hidden_width(d_front, d_back)
        units = heads * self.width
        self.key = nn.Sequential(
            _he_fan_out(nn.Linear(d_back, units, bias=False)), nn.BatchNorm1d(units)
        )
        self.query = nn.Sequential(
            _he_fan_out(nn.Linear(d_front, units, bias=False)), nn.BatchNorm1d(units)
        )

    def forward(self, v_front: Tensor, v_back: Tensor) -> Tensor:
        _check_vectors("v_front", v_front, self.d_front)
        _check_vectors("v_back", v_back, self.d_back)
        if v_front.shape[0] != v_back.shape[0]:
            raise ValueError(
                f"front and back vectors must come from the same batch, got "
                f"{v_front.shape[0]} and {v_back.shape[0]} samples"
            )
        n = v_front.shape[0]
        keys = self.key(v_back).view(n, self.heads, self.width)
        queries = self.query(v_front).view(n, self.heads, self.width)
        return torch.einsum("iad,jad->aij", keys, queries)


def drop_head_mask(heads: int, rows: int, device: torch.device | None = None) -> Tensor:
    """Which heads each row keeps, (A, N) bool: head a iff z[a, i] > mean_a z[., i] (code).

    Gaussian z makes each head kept with probability 1/2 (A/2 heads per row on average) and at
    least one kept per row when A >= 2. With A = 1 the rule never holds, so the only head is
    always dropped: that is the authors' rule taken literally; turn drop-head off for A = 1.
    """
    z = torch.randn(heads, rows, device=device)
    return z > z.mean(dim=0, keepdim=True)


class Estimator(nn.Module):
    """Predicts the back vectors from the front vectors through the heads' attention (section 4).

    h = ReLU(BN(Linear(V^F))), P_a = softmax_j(S_a), drop-head in training, Y = concat_a(P_a h),
    V^B_hat = l2normalize(Linear(Y)). Discarded after the MHAN stage.
    """

    def __init__(
        self, d_front: int, d_back: int, heads: int = DEFAULT_HEADS, drop_head: bool = True
    ) -> None:
        super().__init__()
        _check_widths(d_front, d_back, heads)
        self.d_front, self.heads, self.drop_head = d_front, heads, drop_head
        width = hidden_width(d_front, d_back)
        self.hidden = nn.Sequential(
            _he_fan_out(nn.Linear(d_front, width, bias=False)), nn.BatchNorm1d(width), nn.ReLU()
        )
        self.output = _he_fan_out(nn.Linear(heads * width, d_back, bias=True))

    def forward(self, logits: Tensor, v_front: Tensor) -> Tensor:
        _check_vectors("v_front", v_front, self.d_front)
        n = v_front.shape[0]
        if logits.shape != (self.heads, n, n):
            raise ValueError(
                f"attention logits must have shape ({self.heads}, {n}, {n}) (heads, back "
                f"samples, front samples), got {tuple(logits.shape)}"
            )
        attention = logits.softmax(dim=-1)  # over the front samples j
        if self.training and self.drop_head:
            keep = drop_head_mask(self.heads, n, device=logits.device)
            attention = attention * keep.unsqueeze(-1).to(attention.dtype)  # no rescaling
        mixed = attention @ self.hidden(v_front)  # (A, N, D2)
        concatenated = mixed.transpose(0, 1).reshape(n, -1)  # head a in columns a*D2 ...
        return F.normalize(self.output(concatenated), dim=-1)


def mhan_loss(v_back_hat: Tensor, v_back: Tensor) -> tuple[Tensor, Tensor]:
    """Stage-2 loss of one module, mean_i (1 - cos(V^B_hat_i, V^B_i)), and the mean cosine.

    The caller sums the losses of the modules (section 4); the cosine is detached, for logging.
    """
    if v_back_hat.shape != v_back.shape:
        raise ValueError(
            f"estimated and true back vectors differ in shape: {tuple(v_back_hat.shape)} vs "
            f"{tuple(v_back.shape)}"
        )
    cosines = F.cosine_similarity(v_back_hat, v_back, dim=-1)
    return (1.0 - cosines).mean(), cosines.detach().mean()


def log_relation_graph(logits: Tensor) -> Tensor:
    """log G_a = log softmax_j(tanh(S_a)), the graph over the batch (section 5)."""
    return F.log_softmax(torch.tanh(logits), dim=-1)


def transfer_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(G^S || G^T) of one module, summed over heads, rows and columns (code; section 5).

    Student first. Works in log space, so saturated graphs give no log(0).
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 3:
        raise ValueError(
            "student and teacher attention logits must both have shape (heads, N, N), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    log_student = log_relation_graph(student_logits)
    log_teacher = log_relation_graph(teacher_logits)
    return (log_student.exp() * (log_student - log_teacher)).sum()


def warmup(epoch: int) -> float:
    """sigmoid(e), the factor that lets the transfer gradient grow over the first epochs."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (the student's epoch index), got {epoch}")
    return 1.0 / (1.0 + math.exp(-epoch))


def clip_by_norm(x: Tensor, max_norm: Tensor | float) -> Tensor:
    """x * min(1, max_norm / ||x||), with ||x|| = 0 leaving x (zero) untouched."""
    norm = torch.linalg.vector_norm(x)
    bound = torch.as_tensor(max_norm, dtype=norm.dtype, device=norm.device)
    scale = torch.where(norm > bound, bound / torch.where(norm > bound, norm, 1.0), 1.0)
    return x * scale.to(x.dtype)


def _gradients(loss: Tensor, params: Sequence[Tensor], retain: bool) -> Sequence[Tensor | None]:
    if not loss.requires_grad:
        return [None] * len(params)
    return torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)


def combine_clipped_gradients(
    ce: Tensor, transfer: Tensor, params: Sequence[Tensor], beta: float, epoch: int
) -> dict[str, float]:
    """Set p.grad = g_CE + clip_by_norm(g_transfer, beta * ||g_CE|| * sigmoid(e)) per tensor.

    The section-5 rule (code): the transfer gradient of a tensor may never outgrow that tensor's
    classification gradient times beta * sigmoid(e). A tensor without transfer gradient gets g_CE;
    one with neither keeps no gradient. Weight decay is the optimiser's. Replaces ``.grad``.
    Returns the fraction of tensors whose transfer gradient was clipped and global norms.
    """
    if ce.dim() != 0 or transfer.dim() != 0:
        raise ValueError("the cross-entropy and transfer losses must be scalars (0-dim tensors)")
    if not 0 <= beta < math.inf:
        raise ValueError(f"beta (the transfer loss weight) must be finite and >= 0, got {beta}")
    params = list(params)
    if not params:
        raise ValueError("no parameters given: pass the student's trainable parameters")
    factor = beta * warmup(epoch)
    ce_grads = _gradients(ce, params, retain=True)
    transfer_grads = _gradients(transfer, params, retain=False)
    # Running sums on the device, read once: clipped tensors (a 0/1 flag, equal to its square),
    # ||g_CE||^2, ||g_transfer||^2 before and after clipping.
    totals = torch.zeros(4, dtype=torch.float64, device=params[0].device)
    with_transfer = 0
    for param, g_ce, g_transfer in zip(params, ce_grads, transfer_grads, strict=True):
        if g_ce is None and g_transfer is None:
            param.grad = None
            continue
        g_ce = torch.zeros_like(param) if g_ce is None else g_ce
        ce_norm = torch.linalg.vector_norm(g_ce)
        if g_transfer is None:
            totals[1] += ce_norm.double().square()
            param.grad = g_ce
            continue
        with_transfer += 1
        bound = factor * ce_norm
        limited = clip_by_norm(g_transfer, bound)
        transfer_norm = torch.linalg.vector_norm(g_transfer)
        applied_norm = torch.linalg.vector_norm(limited)
        stats = torch.stack(
            [(transfer_norm > bound).to(ce_norm.dtype), ce_norm, transfer_norm, applied_norm]
        )
        totals += stats.double().square()
        param.grad = g_ce + limited
    clipped, ce_sq, transfer_sq, applied_sq = totals.tolist()
    return {
        "transfer_clipped_fraction": clipped / with_transfer if with_transfer else 0.0,
        "ce_grad_norm": math.sqrt(ce_sq),
        "transfer_grad_norm": math.sqrt(transfer_sq),
        "transfer_grad_norm_applied": math.sqrt(applied_sq),
    }
