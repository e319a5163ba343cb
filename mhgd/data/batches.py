"""Epochs of device-resident batches: the uint8 set moves to the device once, batches are views.

One object serves every epoch of a run; ``iter()`` starts a new epoch. Training batches are
shuffled and augmented with draws from one CPU generator, so checkpointing that generator's state
at an epoch boundary is enough to resume with the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from mhgd.data.augment import flip_and_crop, to_unit_range
from mhgd.data.imageset import ImageSet


class Batches:
    """Iterate (float images in [-0.5, 0.5], int64 labels) batches on ``device``.

    With a ``generator`` each epoch is shuffled; with a ``pad`` too each batch is flipped and
    cropped; ``drop_last`` skips a final partial batch. ``for_training`` and ``for_evaluation``
    set these the way the paper trains and tests.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        device: torch.device | str,
        generator: torch.Generator | None = None,
        pad: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pad is not None and generator is None:
            raise ValueError("augmentation (pad set) needs a generator for its random draws")
        if drop_last and len(data) < batch_size:
            raise ValueError(
                f"only {len(data)} samples for batch_size {batch_size} with drop_last: every "
                "epoch would be empty; lower the batch size or use more data"
            )
        self.data = data.to(device)
        self.batch_size = batch_size
        self.generator = generator
        self.pad = pad
        self.drop_last = drop_last

    @classmethod
    def for_training(
        cls,
        data: ImageSet,
        batch_size: int,
        *,
        device: torch.device | str,
        generator: torch.Generator,
        pad: int,
    ) -> Batches:
        """Shuffled, augmented, full batches only (a tiny last batch would skew BatchNorm)."""
        return cls(data, batch_size, device=device, generator=generator, pad=pad, drop_last=True)

    @classmethod
    def for_evaluation(
        cls, data: ImageSet, batch_size: int, *, device: torch.device | str
    ) -> Batches:
        """In order, unaugmented, every sample counted."""
        return cls(data, batch_size, device=device)

    def __len__(self) -> int:
        full, partial = divmod(len(self.data), self.batch_size)
        return full if self.drop_last or partial == 0 else full + 1

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = None
        if self.generator is not None:
            order = torch.randperm(len(self.data), generator=self.generator)
            order = order.to(self.data.labels.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            if order is None:
                images = self.data.images[start : start + self.batch_size]
                labels = self.data.labels[start : start + self.batch_size]
            else:
                picked = order[start : start + self.batch_size]
                images, labels = self.data.images[picked], self.data.labels[picked]
            images = to_unit_range(images)
            if self.pad is not None:
                images = flip_and_crop(images, self.pad, self.generator)
            yield images, labels
