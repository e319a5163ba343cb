"""The per-tensor gradient clipping of method.md section 5, shared by MHGD and KD-SVD.

g = g_CE + clip_by_norm(g_transfer, beta * ||g_CE|| * sigmoid(e)) for every student tensor: the
transfer gradient of a tensor never outgrows its classification gradient times beta * sigmoid(e).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mhgd.methods.base import Stats


def warmup(epoch: int) -> float:
    """sigmoid(e), the factor that lets the transfer gradient grow over the first epochs."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (the student's epoch index), got {epoch}")
    return 1.0 / (1.0 + math.exp(-epoch))


def clip_scale(norm: Tensor, max_norm: Tensor | float) -> Tensor:
    """min(1, max_norm / norm): the factor that clips a tensor of this norm; 1 for norm 0."""
    bound = torch.as_tensor(max_norm, dtype=norm.dtype, device=norm.device)
    return torch.where(norm > bound, bound / torch.where(norm > bound, norm, 1.0), 1.0)


def clip_by_norm(x: Tensor, max_norm: Tensor | float) -> Tensor:
    """x * min(1, max_norm / ||x||), with ||x|| = 0 leaving x (zero) untouched."""
    return x * clip_scale(torch.linalg.vector_norm(x), max_norm).to(x.dtype)


def _gradients(loss: Tensor, params: Sequence[Tensor], retain: bool) -> Sequence[Tensor | None]:
    if not loss.requires_grad:
        return [None] * len(params)
    return torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)


def combine_clipped_gradients(
    ce: Tensor, transfer: Tensor, params: Sequence[Tensor], beta: float, epoch: int
) -> Stats:
    """Set p.grad = g_CE + clip_by_norm(g_transfer, beta * ||g_CE|| * sigmoid(e)) per tensor.

    The section-5 rule (code): the transfer gradient of a tensor may never outgrow that tensor's
    classification gradient times beta * sigmoid(e). A tensor without transfer gradient gets g_CE;
    one with neither keeps no gradient. Weight decay is the optimiser's. Replaces ``.grad``.
    Returns the fraction of tensors whose transfer gradient was clipped and global norms, as
    0-dim tensors on the device (reading them here would stall a GPU every step).
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
    # Running sums on the device: clipped tensors (a 0/1 flag, equal to its square),
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
        transfer_norm = torch.linalg.vector_norm(g_transfer)
        scale = clip_scale(transfer_norm, bound)
        stats = torch.stack(
            [
                (transfer_norm > bound).to(ce_norm.dtype),
                ce_norm,
                transfer_norm,
                transfer_norm * scale,
            ]
        )
        totals += stats.double().square()
        # One fused pass; never in place: autograd may hand two tensors the same gradient.
        param.grad = torch.addcmul(g_ce, g_transfer, scale.to(g_transfer.dtype))
    clipped, ce_sq, transfer_sq, applied_sq = totals.unbind()
    return {
        "transfer_clipped_fraction": clipped / max(with_transfer, 1),
        "ce_grad_norm": ce_sq.sqrt(),
        "transfer_grad_norm": transfer_sq.sqrt(),
        "transfer_grad_norm_applied": applied_sq.sqrt(),
    }
