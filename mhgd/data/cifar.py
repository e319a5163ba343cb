"""CIFAR-100 from the extracted python-pickle files of the official archive.

torchvision downloads and checks the archive, but the files are read here: torchvision's data
set class verifies every extracted file's md5, which would refuse anything but the originals
(tests write small files in the same format).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from mhgd.data.imageset import DataSpec, ImageSet
from mhgd.data.registry import register_dataset

FOLDER = "cifar-100-python"
IMAGE_SIZE = 32


@register_dataset(DataSpec("cifar100", num_classes=100, image_size=32, pad=4), 5_000)
def load_cifar100(root: str | Path, *, download: bool = False) -> tuple[ImageSet, ImageSet]:
    """Return (training set, test set) from ``root/cifar-100-python/{train,test}``."""
    folder = Path(root) / FOLDER
    missing = [folder / part for part in ("train", "test") if not (folder / part).is_file()]
    if missing and download:
        _download(Path(root), missing[0])
        missing = [path for path in missing if not path.is_file()]
    if missing:
        raise FileNotFoundError(_missing_message(missing[0]))
    return _read_pickle(folder / "train"), _read_pickle(folder / "test")


def _download(root: Path, expected: Path) -> None:
    # torchvision is safe to import: loading this module ran mhgd/__init__ (mhgd/_compat.py fix).
    from torchvision.datasets import CIFAR100

    try:
        CIFAR100(root, train=False, download=True)
    except (OSError, RuntimeError) as error:
        raise FileNotFoundError(
            f"downloading CIFAR-100 failed ({error}). " + _missing_message(expected)
        ) from error


def _missing_message(path: Path) -> str:
    return (
        f"CIFAR-100 file not found: {path}. Either set dataset.download=true on a machine with "
        f"network access, or copy the extracted {FOLDER}/ folder into {path.parent.parent} "
        f"(or point paths.data at a folder that holds {FOLDER}/)."
    )


def _read_pickle(path: Path) -> ImageSet:
    """Decode one file: a dict with b"data" (N, 3072) uint8, rows = R, G, B planes of 32x32."""
    with path.open("rb") as file:
        entry = pickle.load(file, encoding="bytes")
    if not isinstance(entry, dict) or b"data" not in entry or b"fine_labels" not in entry:
        raise ValueError(
            f"{path} is not a CIFAR-100 python file (expected a dict with b'data' and "
            "b'fine_labels'); re-extract cifar-100-python.tar.gz"
        )
    pixels = np.asarray(entry[b"data"], dtype=np.uint8)
    labels = np.asarray(entry[b"fine_labels"], dtype=np.int64)
    if pixels.shape != (len(labels), 3 * IMAGE_SIZE * IMAGE_SIZE):
        raise ValueError(
            f"{path}: b'data' has shape {pixels.shape}, expected ({len(labels)}, "
            f"{3 * IMAGE_SIZE * IMAGE_SIZE}); re-extract cifar-100-python.tar.gz"
        )
    images = pixels.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
    return ImageSet(torch.from_numpy(images.copy()), torch.from_numpy(labels))
