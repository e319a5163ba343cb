"""Training on a stratified part of the training set, for some stages of a job.

Distillation pays where the teacher knows more than the student can learn from its own data: a
teacher trained on the whole training set and a student that sees only a few images per class.
``dataset.subset`` says how many images per class (or what fraction of each class) and which
stages train on them; the other stages keep the whole training set. The images are drawn from
the stage's seed, so seed s of every cell sees the same images (runs of two cells that share a
seed can be compared pair by pair) and a rerun draws them again exactly.

The subset is part of a stage's identity only where it applies: a teacher that trains on the
whole set has the same identity (and cached artifact) whatever its students' subset is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mhgd.data.imageset import ImageSet
from mhgd.errors import ConfigError

SUBSET_KEY = "subset"
STUDENT_STAGE = "student"
SUBSET_STAGES = ("teacher", STUDENT_STAGE, "mhan")
_EXCLUDED = ("download",)  # how the data is fetched, not what it is
_SEED_OFFSET = 7_919  # keeps the subset draw apart from the model's initialisation stream


def subset_is_active(subset: Mapping[str, Any] | None) -> bool:
    """Whether a ``dataset.subset`` node asks for anything but the whole training set."""
    if not subset:
        return False
    per_class, fraction = subset.get("per_class"), subset.get("fraction")
    if per_class is not None and fraction is not None:
        raise ConfigError(
            f"dataset.subset: give per_class ({per_class}) or fraction ({fraction}), not both"
        )
    if per_class is not None and (isinstance(per_class, bool) or int(per_class) < 1):
        raise ConfigError(f"dataset.subset.per_class must be a positive integer, got {per_class}")
    if fraction is not None and not 0 < float(fraction) <= 1:
        raise ConfigError(f"dataset.subset.fraction must be in (0, 1], got {fraction}")
    unknown = [s for s in subset.get("stages", [STUDENT_STAGE]) if s not in SUBSET_STAGES]
    if unknown:
        raise ConfigError(f"dataset.subset.stages: {unknown} unknown; choose from {SUBSET_STAGES}")
    return per_class is not None or fraction is not None


def stage_data_identity(dataset: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The data config a stage trains on: ``subset`` is kept only for the stages it names.

    ``stage`` is "teacher", "student" (also the student's own pre-stages) or a shared pre-stage
    name ("mhan"). Without an active subset the node is dropped, so identities of runs on the
    whole set do not depend on whether their config files mention ``subset`` at all.
    """
    identity = {k: v for k, v in dataset.items() if k not in (*_EXCLUDED, SUBSET_KEY)}
    subset = dataset.get(SUBSET_KEY)
    if subset_is_active(subset) and stage in subset.get("stages", [STUDENT_STAGE]):
        identity[SUBSET_KEY] = {
            "per_class": subset.get("per_class"),
            "fraction": subset.get("fraction"),
        }
    return identity


def stratified_indices(
    labels: Tensor, *, seed: int, per_class: int | None = None, fraction: float | None = None
) -> Tensor:
    """Sorted indices of ``per_class`` samples of every class (or ``fraction`` of each class,
    rounded, at least one), drawn without replacement from ``seed``."""
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class and fraction")
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(_SEED_OFFSET + int(seed))
    chosen = []
    for cls in torch.unique(labels).tolist():
        members = (labels == cls).nonzero().flatten()
        wanted = _wanted(cls, len(members), per_class, fraction)
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[:wanted]])
    return torch.cat(chosen).sort().values


def _wanted(cls: int, members: int, per_class: int | None, fraction: float | None) -> int:
    """How many of a class's ``members`` images the subset keeps (the same for every seed)."""
    wanted = per_class if per_class is not None else max(1, round(members * float(fraction)))
    if wanted > members:
        raise ConfigError(
            f"dataset.subset.per_class={per_class} but class {cls} has only {members} "
            f"training images; pick at most {members}"
        )
    return int(wanted)


def training_size(labels: Tensor, data_identity: Mapping[str, Any]) -> int:
    """How many images a stage with this data identity trains on, without drawing them."""
    subset = data_identity.get(SUBSET_KEY)
    if not subset:
        return len(labels)
    classes, counts = torch.unique(labels.cpu(), return_counts=True)
    per_class, fraction = subset.get("per_class"), subset.get("fraction")
    return sum(
        _wanted(cls, count, per_class, fraction)
        for cls, count in zip(classes.tolist(), counts.tolist(), strict=True)
    )


def training_set(train: ImageSet, data_identity: Mapping[str, Any], seed: int) -> ImageSet:
    """The images a stage trains on, from its identity's data node (see stage_data_identity)."""
    subset = data_identity.get(SUBSET_KEY)
    if not subset:
        return train
    indices = stratified_indices(
        train.labels,
        seed=seed,
        per_class=subset.get("per_class"),
        fraction=subset.get("fraction"),
    )
    return train.subset(indices.to(train.labels.device))


def describe_subset(data_identity: Mapping[str, Any], images: int) -> dict[str, Any] | None:
    """What a run record says about its training set when it is a subset (None: the whole)."""
    subset = data_identity.get(SUBSET_KEY)
    if not subset:
        return None
    return {**subset, "images": images}
