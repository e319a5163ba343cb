"""scikit-learn's bundled 8x8 handwritten digits, dressed as a 32x32 RGB set for offline runs.

It ships inside scikit-learn, so the quickstart and the tests train real models on real images
with no download. 1797 images, 10 classes.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from mhgd.data.imageset import DataSpec, ImageSet
from mhgd.data.registry import register_dataset
from mhgd.data.split import stratified_holdout

IMAGE_SIZE = 32
TEST_SIZE = 360
"""About 20% of 1797, 36 per class."""

_MAX_VALUE = 16


@register_dataset(DataSpec("digits", num_classes=10, image_size=32, pad=4), 290)
def load_digits_set(root: str | Path, *, download: bool = False) -> tuple[ImageSet, ImageSet]:
    """Return a fixed stratified (training, test) split: 1437 / 360 images.

    Pixels go from 0..16 to 0..255 and from 8x8 to 32x32 by bilinear interpolation
    (align_corners=False, i.e. each source pixel covers a 4x4 block and values blend between
    block centres), then are copied to three identical channels. ``root`` and ``download`` are
    accepted so every loader has one signature; the data comes from scikit-learn's package.
    """
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes seconds to load

    bunch = load_digits()
    small = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1)
    large = F.interpolate(small, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
    gray = (large * (255 / _MAX_VALUE)).round().clamp(0, 255).to(torch.uint8)
    images = gray.expand(-1, 3, -1, -1).contiguous()
    data = ImageSet(images, torch.as_tensor(bunch.target, dtype=torch.int64))
    train_indices, test_indices = stratified_holdout(data.labels, TEST_SIZE)
    return data.subset(train_indices), data.subset(test_indices)
