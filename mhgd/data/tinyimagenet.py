"""TinyImageNet from the standard ``tiny-imagenet-200/`` folder, with a decoded-array cache.

Class index = position of the wnid in *sorted* order of ``wnids.txt`` (the order torchvision's
ImageFolder would give the ``train/`` folders), not the file's own line order. The labelled
``val/`` split serves as the test set, since ``test/`` has no labels. Decoding 110k JPEGs is
slow, so each split is decoded once into ``.mhgd-cache-{train,val}.npz`` next to the folders
(delete those files to force a re-decode). Jobs that race to build a cache each write a complete
file and rename it into place, so readers never see half of one. A split with no images is an
error, never a cache; images may end in .JPEG, .jpeg, .jpg or .png (re-encoded copies).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mhgd.data.imageset import DataSpec, ImageSet
from mhgd.data.registry import register_dataset
from mhgd.records import atomic_file

FOLDER = "tiny-imagenet-200"
IMAGE_SIZE = 64
ARCHIVE_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


@register_dataset(DataSpec("tinyimagenet", num_classes=200, image_size=64, pad=8), 10_000)
def load_tinyimagenet(root: str | Path, *, download: bool = False) -> tuple[ImageSet, ImageSet]:
    """Return (training set, labelled validation set) from ``root/tiny-imagenet-200``.

    ``download`` is accepted so every loader has one signature, but it does nothing: there is no
    checksummed source mhgd could verify the archive against.
    """
    folder = Path(root) / FOLDER
    wnids_file = folder / "wnids.txt"
    if not wnids_file.is_file():
        raise FileNotFoundError(
            f"TinyImageNet not found: {wnids_file} is missing. mhgd does not download it (even "
            f"with dataset.download=true): fetch {ARCHIVE_URL} and unzip it into {root}, or "
            f"point paths.data at the folder that holds {FOLDER}/."
        )
    wnids = sorted(wnids_file.read_text().split())
    class_of = {wnid: index for index, wnid in enumerate(wnids)}
    train = _cached(folder / ".mhgd-cache-train.npz", lambda: _train_files(folder, wnids))
    val = _cached(folder / ".mhgd-cache-val.npz", lambda: _val_files(folder, class_of))
    return train, val


def _train_files(folder: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        if not images.is_dir():
            raise FileNotFoundError(f"TinyImageNet training folder missing: {images}")
        found = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FileNotFoundError(
                f"TinyImageNet class {wnid} has no images in {images} (expected "
                f"{', '.join(IMAGE_SUFFIXES)} files)"
            )
        files += [(path, label) for path in found]
    return files


def _val_files(folder: Path, class_of: dict[str, int]) -> list[tuple[Path, int]]:
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise FileNotFoundError(f"TinyImageNet validation labels missing: {annotations}")
    files = []
    for line_number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_of:
            raise ValueError(
                f"{annotations}:{line_number}: expected 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1"
                f"<TAB>y1' with a wnid from wnids.txt, got {line!r}"
            )
        files.append((folder / "val" / "images" / fields[0], class_of[fields[1]]))
    if not files:
        raise FileNotFoundError(f"TinyImageNet validation labels are empty: {annotations}")
    return files


def _cached(cache: Path, list_files: Callable[[], list[tuple[Path, int]]]) -> ImageSet:
    """The decoded split, from the cache; an empty cache (older versions wrote one) is rebuilt."""
    if cache.is_file():
        with np.load(cache) as arrays:
            images, labels = arrays["images"], arrays["labels"]
        if len(labels):
            return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))
    images, labels = _decode(list_files())
    with atomic_file(cache, "wb") as handle:
        np.savez(handle, images=images, labels=labels)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))


def _decode(files: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Decode to uint8 (N, 3, 64, 64); TinyImageNet has some grayscale JPEGs, made RGB here."""
    images = np.empty((len(files), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for index, (path, _) in enumerate(files):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(
                f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, TinyImageNet images are "
                f"{IMAGE_SIZE}x{IMAGE_SIZE}; replace the file with the original"
            )
        images[index] = pixels.transpose(2, 0, 1)
    labels = np.array([label for _, label in files], dtype=np.int64)
    return images, labels
