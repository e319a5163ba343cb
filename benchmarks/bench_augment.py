"""Images per second: mhgd's batched tensor augmentation vs torchvision's per-sample pipeline.

Both pipelines do the paper's CIFAR augmentation (flip, zero-pad 4, crop 32, scale) with
batch 128 and a shuffled epoch over the same random uint8 data; torchvision's runs through a
DataLoader with worker processes, as a typical PyTorch training script would.

    python benchmarks/bench_augment.py [--images 50000] [--workers 2] [--device cpu]
                                       [--epochs 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mhgd.data import Batches, ImageSet

BATCH_SIZE = 128
PAD = 4


class _PerSampleCifar(Dataset):
    """HWC uint8 images, handed to torchvision's transforms one PIL image at a time."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray) -> None:
        # Imported here, after mhgd, whose __init__ installs the torchvision import fix.
        from torchvision import transforms

        self.images = images_hwc
        self.labels = labels
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=PAD),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (1.0, 1.0, 1.0)),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def batched_rate(data: ImageSet, device: str, epochs: int) -> float:
    """Median over epochs: a single sub-second epoch is at the mercy of other processes."""
    batches = Batches.for_training(
        data, BATCH_SIZE, device=device, generator=torch.Generator().manual_seed(0), pad=PAD
    )
    rates = []
    for _ in range(epochs):
        _synchronize(device)
        start = time.perf_counter()
        seen = sum(len(images) for images, _ in batches)
        _synchronize(device)
        rates.append(seen / (time.perf_counter() - start))
    return statistics.median(rates)


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def per_sample_rate(data: ImageSet, workers: int) -> float:
    dataset = _PerSampleCifar(data.images.permute(0, 2, 3, 1).numpy(), data.labels.numpy())
    loader = DataLoader(
        dataset, batch_size=BATCH_SIZE, shuffle=True, drop_last=True, num_workers=workers
    )
    start = time.perf_counter()
    seen = sum(len(images) for images, _ in loader)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=5, help="batched-pipeline epochs to time")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    data = ImageSet(
        torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=generator),
        torch.randint(0, 100, (args.images,), generator=generator),
    )
    batched = batched_rate(data, args.device, args.epochs)
    per_sample = per_sample_rate(data, args.workers)
    threads = torch.get_num_threads()
    print(f"batched tensor pipeline ({args.device}, {threads} threads): {batched:8.0f} images/s")
    print(f"torchvision per-sample ({args.workers} workers): {per_sample:8.0f} images/s")
    print(f"ratio: {batched / per_sample:.1f}x")


if __name__ == "__main__":
    main()
