"""The paper's augmentation, applied to whole batches on the training device.

Per-sample work in DataLoader workers is what limits a fast GPU on CIFAR-sized images; a batch
of index arithmetic on the device is much cheaper. Random numbers are drawn from a CPU
``torch.Generator`` so a given generator state gives the same batch on any device, and saving
that state in a checkpoint makes a resumed run draw exactly what the uninterrupted one would.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_unit_range(images: Tensor) -> Tensor:
    """uint8 pixels -> float32 in [-0.5, 0.5] (x / 255 - 0.5), as the paper scales them."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_unit_range expects uint8 pixels, got {images.dtype}")
    return images.float().div_(255).sub_(0.5)


def flip_and_crop(images: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Random horizontal flip (p = 0.5) and random crop of the zero-padded image, per sample.

    ``images`` is a float (N, C, H, W) batch, contiguous or channels_last (the output keeps the
    layout). Each sample is padded by ``pad`` pixels per side and an H x W window is cut at a
    random offset in [0, 2 * pad] along each axis. The padding value is 0 *after* scaling to
    [-0.5, 0.5], i.e. mid-grey rather than black (the paper scales pixels, then zero-pads).
    The padded image is never built: each output pixel gathers its source pixel, or 0 where the
    source falls in the padded band.
    """
    if not images.is_floating_point() or images.dim() != 4:
        raise ValueError(
            f"flip_and_crop expects a float (N, C, H, W) batch, got {images.dtype} of shape "
            f"{tuple(images.shape)}; scale uint8 images with to_unit_range first"
        )
    if pad < 0:
        raise ValueError(f"pad must be >= 0 pixels, got {pad}")
    if generator.device.type != "cpu":
        raise ValueError(
            f"flip_and_crop draws from a CPU generator (device-independent results), got one on "
            f"{generator.device}; pass torch.Generator() instead"
        )
    count, channels, height, width = images.shape
    flips = torch.randint(0, 2, (count,), generator=generator).bool().to(images.device)
    offsets = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator).to(images.device)

    row_steps = torch.arange(height, device=images.device)
    col_steps = torch.arange(width, device=images.device)
    source_rows = offsets[:, :1] - pad + row_steps
    source_cols = (
        offsets[:, 1:] - pad + torch.where(flips[:, None], width - 1 - col_steps, col_steps)
    )
    inside = ((source_rows >= 0) & (source_rows < height))[:, :, None] & (
        (source_cols >= 0) & (source_cols < width)
    )[:, None, :]
    flat_source = (
        source_rows.clamp(0, height - 1)[:, :, None] * width
        + source_cols.clamp(0, width - 1)[:, None, :]
    )
    gathered = images.reshape(count, channels, height * width).gather(
        2, flat_source.view(count, 1, height * width).expand(count, channels, height * width)
    )
    cropped = torch.where(inside[:, None], gathered.view(images.shape), 0.0)
    return cropped.contiguous(memory_format=_memory_format(images))


def _memory_format(images: Tensor) -> torch.memory_format:
    if not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
