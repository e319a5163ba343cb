"""In-memory image sets: small enough to live whole on the training device as uint8 tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class DataSpec:
    """What a model and the augmentation need to know about a data set.

    ``pad`` is the zero padding (pixels per side) of the random-crop augmentation.
    """

    name: str
    num_classes: int
    image_size: int
    pad: int


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 (N, 3, H, W) with int64 class labels (N,), on one device."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.size(1) != 3:
            raise ValueError(
                "ImageSet.images must be a uint8 tensor of shape (N, 3, H, W), got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(
                "ImageSet.labels must be an int64 tensor of shape (N,), got "
                f"{self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"ImageSet has {len(self.images)} images but {len(self.labels)} labels; "
                "they must match one to one"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device))

    def subset(self, indices: Tensor) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices])
