"""Stratified hold-out splits that depend only on the labels and a fixed seed, never a run seed.

Tuning sweeps evaluate on a held-out part of the training set so they never look at the test
set; every run of every sweep must see the same held-out part, hence the fixed seed.
"""

from __future__ import annotations

import torch
from torch import Tensor

SPLIT_SEED = 20190705
"""Seed of every held-out split (any fixed value works; this one is the paper's arXiv date)."""


def stratified_holdout(
    labels: Tensor, holdout_size: int, *, seed: int = SPLIT_SEED
) -> tuple[Tensor, Tensor]:
    """Return sorted (kept indices, held-out indices), disjoint and covering ``labels``.

    Each class gives ``holdout_size // num_classes`` samples to the held-out part; the remainder
    goes one each to classes picked at random (with the same seed), so class counts in the
    held-out part differ by at most one.
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    total = len(labels)
    if not 0 < holdout_size < total:
        raise ValueError(
            f"holdout size must be between 1 and {total - 1} for {total} samples, "
            f"got {holdout_size}; pick a val_size in that range"
        )
    generator = torch.Generator().manual_seed(seed)
    classes, class_of_sample, class_counts = torch.unique(
        labels.cpu(), return_inverse=True, return_counts=True
    )
    num_classes = len(classes)
    quota = torch.full((num_classes,), holdout_size // num_classes, dtype=torch.int64)
    quota[torch.randperm(num_classes, generator=generator)[: holdout_size % num_classes]] += 1
    short = (quota > class_counts).nonzero().flatten()
    if len(short) > 0:
        first = short[0].item()
        raise ValueError(
            f"holdout size {holdout_size} needs {quota[first].item()} samples of class "
            f"{classes[first].item()}, which has only {class_counts[first].item()}; "
            "pick a smaller val_size"
        )

    shuffled = torch.randperm(total, generator=generator)
    by_class = shuffled[torch.argsort(class_of_sample[shuffled], stable=True)]
    class_starts = torch.cumsum(class_counts, 0) - class_counts
    sorted_classes = class_of_sample[by_class]
    rank_in_class = torch.arange(total) - class_starts[sorted_classes]
    held_out = rank_in_class < quota[sorted_classes]
    return by_class[~held_out].sort().values, by_class[held_out].sort().values
