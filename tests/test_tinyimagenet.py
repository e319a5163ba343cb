"""TinyImageNet's decoded cache and file names, on small files in the real folder layout."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from mhgd.data import load_dataset
from tests.test_data import _COLOURS, _write_jpeg, _write_tinyimagenet


def test_a_class_of_jpg_files_is_loaded_not_dropped(tmp_path: Path) -> None:
    folder = _write_tinyimagenet(tmp_path)
    images = folder / "train" / "n03000000" / "images"
    for jpeg in images.iterdir():  # a re-encoded copy of the data set: .jpg, not .JPEG
        jpeg.rename(jpeg.with_suffix(".jpg"))

    train, _, _ = load_dataset("tinyimagenet", tmp_path)

    assert train.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]  # class 2 (n03000000) is there


def test_a_split_without_images_fails_and_leaves_no_cache(tmp_path: Path) -> None:
    folder = _write_tinyimagenet(tmp_path)
    images = folder / "train" / "n01000000" / "images"
    moved = tmp_path / "moved"
    images.rename(moved)
    images.mkdir()  # an unzip that stopped halfway: the folder is there, the files are not

    with pytest.raises(FileNotFoundError, match=r"n01000000 has no images"):
        load_dataset("tinyimagenet", tmp_path)
    assert not (folder / ".mhgd-cache-train.npz").exists()

    images.rmdir()
    moved.rename(images)  # the files fixed: the next load works
    train, _, _ = load_dataset("tinyimagenet", tmp_path)
    assert len(train.labels) == 7


def test_an_empty_cache_left_by_an_older_version_is_rebuilt(tmp_path: Path) -> None:
    folder = _write_tinyimagenet(tmp_path)
    empty = np.empty((0, 3, 64, 64), dtype=np.uint8)
    np.savez(folder / ".mhgd-cache-train.npz", images=empty, labels=np.empty(0, dtype=np.int64))

    train, _, _ = load_dataset("tinyimagenet", tmp_path)

    assert len(train.labels) == 7


def test_the_cache_is_readable_by_the_group(tmp_path: Path) -> None:
    folder = _write_tinyimagenet(tmp_path)
    _write_jpeg(folder / "train" / "n01000000" / "images" / "extra.png", _COLOURS["n01000000"])
    previous = os.umask(0o002)
    try:
        train, _, _ = load_dataset("tinyimagenet", tmp_path)
    finally:
        os.umask(previous)

    assert len(train.labels) == 8  # .png counts too
    mode = stat.S_IMODE((folder / ".mhgd-cache-train.npz").stat().st_mode)
    assert mode == 0o664
