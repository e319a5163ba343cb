"""KD-SVDF, the MHGD paper's ablation of KD-SVD (method.md section 9): vectors, no relations.

The student's aligned singular vector at each sensing point is pulled to the teacher's by L2:
the sum over points, samples and channels of (v_S - v_T)^2 (a sum, like KD-SVD's loss), with
the compression of mhgd.methods.svd and no kernel. No public code of the authors implements it;
their optimiser clips the distillation gradient of every method whose name starts with "KD-"
(op_util.Optimizer_w_Distillation), so KD-SVDF clips like KD-SVD, per tensor, to
beta * ||g_CE|| * sigmoid(epoch) (``clip=false`` adds the gradients instead).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from mhgd.methods.base import register
from mhgd.methods.kdsvd import SingularVectorDistiller, check_vector_lists


def kdsvdf_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Sum over points, samples and channels of (v_S - v_T)^2; the teacher is constant."""
    check_vector_lists(student, teacher)
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher, strict=True):
        total = total + (s - t.detach()).square().sum()
    return total


@register
class KDSVDF(SingularVectorDistiller):
    """L2 between aligned student and teacher singular vectors at every sensing point."""

    name = "kdsvdf"

    def transfer_loss(self, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
        return kdsvdf_loss(student, teacher)
