"""Data loading, splits, augmentation and batching, on files written in the real formats."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits

from mhgd.data import (
    DATASETS,
    Batches,
    ImageSet,
    flip_and_crop,
    load_dataset,
    stage_data_identity,
    stratified_holdout,
    stratified_indices,
    to_unit_range,
    training_set,
    training_size,
)
from mhgd.errors import ConfigError

# --- CIFAR-100 ------------------------------------------------------------------------------

_NUMPY_RECONSTRUCT = np.empty(0).__reduce__()[0]


class _Python2Pickler(pickle._Pickler):
    """Pickles like the Python 2 cPickle that wrote the CIFAR-100 archive.

    Protocol 2, every string as a Python 2 byte string (BINSTRING, which Python 3 reads back as
    bytes under encoding="bytes"), and numpy's array constructor under its old module name.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_python2_str(self, text: str | bytes) -> None:
        raw = text.encode("latin-1") if isinstance(text, str) else text
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(text)

    dispatch[str] = _save_python2_str
    dispatch[bytes] = _save_python2_str

    def save_global(self, obj: object, name: str | None = None) -> None:
        if obj is _NUMPY_RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _write_python2_pickle(path: Path, content: dict) -> None:
    with path.open("wb") as file:
        _Python2Pickler(file, protocol=2).dump(content)


def _random_pixels(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3072), dtype=np.uint8)


def _fine_labels(count: int) -> list[int]:
    return [index % 100 for index in range(count)]


def _write_cifar100(root: Path, train_pixels: np.ndarray, test_pixels: np.ndarray) -> None:
    """Write train/test/meta as in cifar-100-python.tar.gz; sample i has fine label i % 100."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for part, pixels in (("train", train_pixels), ("test", test_pixels)):
        fine = _fine_labels(len(pixels))
        _write_python2_pickle(
            folder / part,
            {
                b"filenames": [f"image_{index:05d}.png".encode() for index in range(len(fine))],
                b"batch_label": f"{part}ing batch 1 of 1".encode(),
                b"fine_labels": fine,
                b"coarse_labels": [label // 5 for label in fine],
                b"data": pixels,
            },
        )
    _write_python2_pickle(
        folder / "meta",
        {
            b"fine_label_names": [f"fine_{index}".encode() for index in range(100)],
            b"coarse_label_names": [f"coarse_{index}".encode() for index in range(20)],
        },
    )


def test_cifar100_pickles_decode_to_planar_rgb_images(tmp_path: Path) -> None:
    train_pixels, test_pixels = _random_pixels(150, seed=1), _random_pixels(120, seed=2)
    train_pixels[7, 1024 + 5 * 32 + 9] = 201  # image 7, green plane, row 5, column 9
    _write_cifar100(tmp_path, train_pixels, test_pixels)

    train, test, spec = load_dataset("cifar100", tmp_path)

    assert (spec.num_classes, spec.image_size, spec.pad) == (100, 32, 4)
    assert train.images.shape == (150, 3, 32, 32) and test.images.shape == (120, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.images[7, 1, 5, 9].item() == 201
    assert torch.equal(train.images.flatten(1), torch.from_numpy(train_pixels))
    assert torch.equal(test.images.flatten(1), torch.from_numpy(test_pixels))
    assert train.labels.tolist() == _fine_labels(150)
    assert test.labels.tolist() == _fine_labels(120)


def test_cifar100_missing_files_name_the_path_and_both_fixes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        load_dataset("cifar100", tmp_path)
    message = str(raised.value)
    assert str(tmp_path / "cifar-100-python" / "train") in message
    assert "dataset.download=true" in message and "paths.data" in message


def test_cifar100_file_that_is_not_a_cifar_pickle_is_rejected(tmp_path: Path) -> None:
    _write_cifar100(tmp_path, _random_pixels(10), _random_pixels(10))
    _write_python2_pickle(tmp_path / "cifar-100-python" / "test", {b"labels": [1, 2]})
    with pytest.raises(ValueError, match="not a CIFAR-100 python file"):
        load_dataset("cifar100", tmp_path)


def test_cifar100_tune_split_holds_out_part_of_the_training_set(tmp_path: Path) -> None:
    train_pixels = _random_pixels(300)
    _write_cifar100(tmp_path, train_pixels, _random_pixels(10))
    train, val, _ = load_dataset("cifar100", tmp_path, split="tune", val_size=100)
    assert (len(train), len(val)) == (200, 100)
    assert torch.equal(val.labels.bincount(minlength=100), torch.ones(100, dtype=torch.int64))
    all_rows = {row.tobytes() for row in train_pixels}
    seen = [row.numpy().tobytes() for row in torch.cat([train.images, val.images]).flatten(1)]
    assert set(seen) == all_rows and len(seen) == len(all_rows)


# --- TinyImageNet ---------------------------------------------------------------------------

_WNIDS = ["n03000000", "n01000000", "n02000000"]  # file order; sorted order gives the labels
_COLOURS = {"n01000000": (200, 30, 30), "n02000000": (30, 200, 30), "n03000000": (30, 30, 200)}


def _write_jpeg(path: Path, colour: tuple[int, int, int] | int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if isinstance(colour, int) else "RGB"
    Image.new(mode, (64, 64), colour).save(path, quality=95)


def _write_tinyimagenet(root: Path) -> Path:
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(_WNIDS) + "\n")
    for wnid in _WNIDS:
        for index in range(2):
            _write_jpeg(folder / "train" / wnid / "images" / f"{wnid}_{index}.JPEG", _COLOURS[wnid])
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    _write_jpeg(folder / "train" / "n02000000" / "images" / "n02000000_2.JPEG", 90)  # grayscale
    annotations = []
    for index, wnid in enumerate(["n02000000", "n03000000", "n01000000", "n02000000"]):
        _write_jpeg(folder / "val" / "images" / f"val_{index}.JPEG", _COLOURS[wnid])
        annotations.append(f"val_{index}.JPEG\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return folder


def test_tinyimagenet_labels_follow_sorted_wnids_and_grayscale_becomes_rgb(tmp_path: Path) -> None:
    _write_tinyimagenet(tmp_path)
    train, val, spec = load_dataset("tinyimagenet", tmp_path)

    assert (spec.num_classes, spec.image_size, spec.pad) == (200, 64, 8)
    assert train.images.shape == (7, 3, 64, 64) and val.images.shape == (4, 3, 64, 64)
    assert train.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert val.labels.tolist() == [1, 2, 0, 1]
    mean_colours = train.images.float().mean(dim=(2, 3))
    expected = [_COLOURS[wnid] for wnid in sorted(_WNIDS) for _ in range(2)]
    expected.insert(4, (90, 90, 90))
    assert torch.allclose(mean_colours, torch.tensor(expected, dtype=torch.float32), atol=3)
    grayscale = train.images[4]
    assert torch.equal(grayscale[0], grayscale[1]) and torch.equal(grayscale[1], grayscale[2])


def test_tinyimagenet_cache_is_written_once_and_reused(tmp_path: Path) -> None:
    folder = _write_tinyimagenet(tmp_path)
    first_train, first_val, _ = load_dataset("tinyimagenet", tmp_path)
    caches = sorted(path.name for path in folder.iterdir() if path.is_file())
    assert caches == [".mhgd-cache-train.npz", ".mhgd-cache-val.npz", "wnids.txt"]

    for jpeg in folder.glob("*/**/*.JPEG"):  # a reload that decoded again would now fail
        jpeg.unlink()
    second_train, second_val, _ = load_dataset("tinyimagenet", tmp_path)
    assert torch.equal(first_train.images, second_train.images)
    assert torch.equal(first_train.labels, second_train.labels)
    assert torch.equal(first_val.images, second_val.images)


def test_tinyimagenet_missing_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"wnids\.txt") as raised:
        load_dataset("tinyimagenet", tmp_path)
    assert str(tmp_path / "tiny-imagenet-200" / "wnids.txt") in str(raised.value)


def test_tinyimagenet_missing_val_annotations_names_the_path(tmp_path: Path) -> None:
    folder = _write_tinyimagenet(tmp_path)
    (folder / "val" / "val_annotations.txt").unlink()
    with pytest.raises(FileNotFoundError) as raised:
        load_dataset("tinyimagenet", tmp_path)
    assert str(folder / "val" / "val_annotations.txt") in str(raised.value)


def test_tinyimagenet_annotation_with_unknown_wnid_is_rejected(tmp_path: Path) -> None:
    folder = _write_tinyimagenet(tmp_path)
    (folder / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn09999999\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations\.txt:1"):
        load_dataset("tinyimagenet", tmp_path)


# --- digits ---------------------------------------------------------------------------------


def test_digits_are_32x32_rgb_uint8_with_a_fixed_stratified_split(tmp_path: Path) -> None:
    train, test, spec = load_dataset("digits", tmp_path)
    again_train, again_test, _ = load_dataset("digits", tmp_path)

    assert (spec.num_classes, spec.image_size, spec.pad) == (10, 32, 4)
    assert train.images.shape == (1437, 3, 32, 32) and test.images.shape == (360, 3, 32, 32)
    assert train.images.dtype == torch.uint8
    assert train.images.min().item() == 0 and train.images.max().item() == 255
    assert torch.equal(train.images[:, 0], train.images[:, 2])
    assert torch.equal(test.labels.bincount(), torch.full((10,), 36))
    assert torch.equal(train.images, again_train.images)
    assert torch.equal(test.labels, again_test.labels)


def test_digits_images_are_the_sklearn_digits_upsampled(tmp_path: Path) -> None:
    """Shrunk back to 8x8, each image's nearest sklearn digit is a distinct one of its class.

    A transposed or mirrored upsampling fails this (about 20% and 35% of labels agree).
    """
    train, test, _ = load_dataset("digits", tmp_path)
    bunch = load_digits()
    originals = torch.as_tensor(bunch.images, dtype=torch.float32).flatten(1) * (255 / 16)
    images = torch.cat([train.images, test.images])[:, :1].float()
    shrunk = F.interpolate(images, size=8, mode="area").flatten(1)
    nearest = torch.cdist(shrunk, originals).argmin(dim=1)
    labels = torch.cat([train.labels, test.labels])
    assert torch.equal(torch.as_tensor(bunch.target)[nearest], labels)
    assert len(set(nearest.tolist())) > 0.99 * len(originals)


# --- splits ---------------------------------------------------------------------------------


def test_holdout_is_deterministic_disjoint_stratified_and_ignores_the_run_seed() -> None:
    labels = torch.arange(1000) % 7
    torch.manual_seed(1)
    kept, held_out = stratified_holdout(labels, 100)
    torch.manual_seed(2)
    kept_again, held_out_again = stratified_holdout(labels, 100)

    assert torch.equal(kept, kept_again) and torch.equal(held_out, held_out_again)
    assert (len(kept), len(held_out)) == (900, 100)
    assert torch.equal(torch.cat([kept, held_out]).sort().values, torch.arange(1000))
    counts = labels[held_out].bincount()
    assert counts.max() - counts.min() <= 1 and len(counts) == 7


def test_holdout_differs_with_the_split_seed() -> None:
    labels = torch.arange(1000) % 10
    first, _ = stratified_holdout(labels, 100, seed=0)
    second, _ = stratified_holdout(labels, 100, seed=1)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("size", [0, 1000, 120])
def test_holdout_rejects_sizes_it_cannot_serve(size: int) -> None:
    labels = torch.cat([torch.zeros(990, dtype=torch.int64), torch.ones(10, dtype=torch.int64)])
    with pytest.raises(ValueError, match="val_size"):
        stratified_holdout(labels, size)


def test_digits_tune_split_sizes_and_separation(tmp_path: Path) -> None:
    final_train, _, _ = load_dataset("digits", tmp_path)
    train, val, _ = load_dataset("digits", tmp_path, split="tune")
    assert (len(train), len(val)) == (1147, 290)
    assert torch.equal(val.labels.bincount(), torch.full((10,), 29))
    rows = {image.numpy().tobytes() for image in final_train.images}
    tune_rows = [image.numpy().tobytes() for image in torch.cat([train.images, val.images])]
    assert set(tune_rows) == rows


def test_load_dataset_rejects_unknown_names_splits_and_stray_val_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cifar100.*digits.*tinyimagenet"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(ValueError, match=r"final.*tune"):
        load_dataset("digits", tmp_path, split="test")
    with pytest.raises(ValueError, match="split='tune'"):
        load_dataset("digits", tmp_path, val_size=10)
    assert set(DATASETS) == {"cifar100", "tinyimagenet", "digits"}


def test_imageset_rejects_wrong_dtypes_and_lengths() -> None:
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(images.float(), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        ImageSet(images, torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        ImageSet(images, torch.zeros(3, dtype=torch.int64))


# --- augmentation ---------------------------------------------------------------------------


def test_to_unit_range_maps_0_and_255_to_the_ends() -> None:
    scaled = to_unit_range(torch.tensor([0, 51, 255], dtype=torch.uint8))
    assert scaled.dtype == torch.float32
    assert torch.allclose(scaled, torch.tensor([-0.5, -0.3, 0.5]))
    with pytest.raises(TypeError, match="uint8"):
        to_unit_range(scaled)


def _random_batch(count: int, size: int = 6, seed: int = 0) -> torch.Tensor:
    """Distinct continuous values, so every window of every sample is unique."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, size, size, generator=generator) - 0.5


def _matching_windows(
    source: torch.Tensor, output: torch.Tensor, pad: int
) -> list[tuple[int, int, bool]]:
    """For each sample, the (row offset, column offset, flipped) whose window equals its output.

    Reference: explicit zero padding, slicing and mirroring, one sample at a time.
    """
    height, width = source.shape[2:]
    found = []
    for sample, result in zip(source, output, strict=True):
        padded = F.pad(sample, (pad, pad, pad, pad))
        matches = [
            (row, col, flipped)
            for row in range(2 * pad + 1)
            for col in range(2 * pad + 1)
            for flipped in (False, True)
            if torch.equal(
                result,
                padded[:, row : row + height, col : col + width].flip(-1)
                if flipped
                else padded[:, row : row + height, col : col + width],
            )
        ]
        assert len(matches) == 1, f"output matches {len(matches)} windows of its input"
        found.append(matches[0])
    return found


def test_flip_and_crop_keeps_shape_dtype_and_range() -> None:
    batch = _random_batch(32)
    output = flip_and_crop(batch, 2, torch.Generator().manual_seed(0))
    assert output.shape == batch.shape and output.dtype == batch.dtype
    assert output.min() >= -0.5 and output.max() <= 0.5


def test_flip_without_padding_mirrors_the_input() -> None:
    batch = _random_batch(64)
    output = flip_and_crop(batch, 0, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out, image.flip(-1)) for image, out in zip(batch, output, strict=True)]
    kept = [torch.equal(out, image) for image, out in zip(batch, output, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48


def test_crop_is_a_shifted_window_of_the_zero_padded_image() -> None:
    pad = 2
    batch = _random_batch(400)
    output = flip_and_crop(batch, pad, torch.Generator().manual_seed(3))
    windows = _matching_windows(batch, output, pad)
    offsets = {(row, col) for row, col, _ in windows}
    assert offsets == {(row, col) for row in range(5) for col in range(5)}
    assert 150 < sum(flipped for _, _, flipped in windows) < 250
    zero_top = [index for index, (row, _, _) in enumerate(windows) if row == 0]
    assert (output[zero_top, :, :pad] == 0).all()


def test_same_generator_state_gives_the_same_batch() -> None:
    batch = _random_batch(16)
    generator = torch.Generator().manual_seed(9)
    state = generator.get_state()
    first = flip_and_crop(batch, 2, generator)
    after_first = flip_and_crop(batch, 2, generator)
    generator.set_state(state)
    assert torch.equal(flip_and_crop(batch, 2, generator), first)
    assert not torch.equal(first, after_first)


def test_channels_last_input_gives_the_same_pixels_in_the_same_layout() -> None:
    batch = _random_batch(16, size=8)
    channels_last = batch.contiguous(memory_format=torch.channels_last)
    expected = flip_and_crop(batch, 2, torch.Generator().manual_seed(4))
    output = flip_and_crop(channels_last, 2, torch.Generator().manual_seed(4))
    assert torch.equal(output, expected)
    assert output.is_contiguous(memory_format=torch.channels_last)
    assert expected.is_contiguous()


def test_flip_and_crop_rejects_bad_input() -> None:
    generator = torch.Generator()
    with pytest.raises(ValueError, match="to_unit_range"):
        flip_and_crop(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), 1, generator)
    with pytest.raises(ValueError, match="pad"):
        flip_and_crop(torch.zeros(2, 3, 4, 4), -1, generator)


# --- batches --------------------------------------------------------------------------------


def _numbered_set(count: int) -> ImageSet:
    """Sample i has label i and every pixel equal to i, so batches reveal where they came from."""
    values = torch.arange(count, dtype=torch.uint8)
    images = values.view(count, 1, 1, 1).expand(count, 3, 8, 8).contiguous()
    return ImageSet(images, torch.arange(count))


def test_evaluation_batches_keep_order_and_the_last_partial_batch() -> None:
    data = _numbered_set(10)
    batches = Batches.for_evaluation(data, 4, device="cpu")
    seen = list(batches)
    assert len(batches) == 3 and [len(labels) for _, labels in seen] == [4, 4, 2]
    assert torch.equal(torch.cat([labels for _, labels in seen]), torch.arange(10))
    images = torch.cat([images for images, _ in seen])
    assert images.dtype == torch.float32
    assert torch.equal(images, to_unit_range(data.images))


def test_training_batches_shuffle_drop_the_last_and_augment() -> None:
    data = _numbered_set(10)
    batches = Batches.for_training(
        data, 4, device="cpu", generator=torch.Generator().manual_seed(0), pad=2
    )
    first_epoch, second_epoch = list(batches), list(batches)
    assert len(batches) == 2 and [len(labels) for _, labels in first_epoch] == [4, 4]
    first_order = torch.cat([labels for _, labels in first_epoch])
    second_order = torch.cat([labels for _, labels in second_epoch])
    assert len(set(first_order.tolist())) == 8
    assert not torch.equal(first_order, second_order)
    images, labels = first_epoch[0]
    plain = to_unit_range(data.images[labels])
    padded_band = images != plain
    assert padded_band.any() and (images[padded_band] == 0).all()


def test_training_batches_repeat_with_the_same_seed() -> None:
    data = _numbered_set(12)

    def epoch(seed: int) -> list[torch.Tensor]:
        batches = Batches.for_training(
            data, 4, device="cpu", generator=torch.Generator().manual_seed(seed), pad=2
        )
        return [images for images, _ in batches]

    first, again, other = epoch(5), epoch(5), epoch(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_batches_reject_settings_that_cannot_work() -> None:
    data = _numbered_set(3)
    with pytest.raises(ValueError, match="every epoch would be empty"):
        Batches.for_training(data, 4, device="cpu", generator=torch.Generator(), pad=2)
    with pytest.raises(ValueError, match="needs a generator"):
        Batches(data, 2, device="cpu", pad=2)
    with pytest.raises(ValueError, match="batch_size"):
        Batches(data, 0, device="cpu")


# --- training subsets (dataset.subset) --------------------------------------------------------


def _digits_train(tmp_path: Path, split: str = "final") -> ImageSet:
    return load_dataset("digits", tmp_path, split=split)[0]


def test_subset_is_stratified(tmp_path: Path) -> None:
    train = _digits_train(tmp_path)
    picked = stratified_indices(train.labels, seed=0, per_class=10)
    assert torch.bincount(train.labels[picked]).tolist() == [10] * 10
    assert len(set(picked.tolist())) == 100
    counts = torch.bincount(train.labels)
    share = stratified_indices(train.labels, seed=0, fraction=0.1)
    expected = [max(1, round(c * 0.1)) for c in counts.tolist()]
    assert torch.bincount(train.labels[share]).tolist() == expected


@pytest.mark.parametrize("subset", [None, {"per_class": 7}, {"fraction": 0.15}], ids=str)
def test_training_size_counts_the_images_without_drawing_them(tmp_path: Path, subset) -> None:
    train = _digits_train(tmp_path)
    identity = {"name": "digits", **({"subset": subset} if subset else {})}
    drawn = [len(training_set(train, identity, seed=seed)) for seed in (0, 5)]
    assert drawn == [training_size(train.labels, identity)] * 2


def test_subset_is_drawn_from_the_seed(tmp_path: Path) -> None:
    labels = _digits_train(tmp_path).labels
    again = stratified_indices(labels, seed=3, per_class=10)
    assert torch.equal(stratified_indices(labels, seed=3, per_class=10), again)
    assert not torch.equal(stratified_indices(labels, seed=4, per_class=10), again)


def test_subset_of_the_tune_split_never_touches_the_validation_images(tmp_path: Path) -> None:
    whole = _digits_train(tmp_path)
    kept, held_out = stratified_holdout(whole.labels, DATASETS["digits"].tune_val_size)
    tune_train = _digits_train(tmp_path, split="tune")
    assert torch.equal(tune_train.labels, whole.labels[kept])  # the tune split's training part
    identity = stage_data_identity({"name": "digits", "subset": {"per_class": 5}}, "student")
    subset = training_set(tune_train, identity, seed=1)
    assert torch.bincount(subset.labels).tolist() == [5] * 10
    chosen = kept[stratified_indices(tune_train.labels, seed=1, per_class=5)]
    assert torch.equal(subset.images, whole.images[chosen])
    assert not set(chosen.tolist()) & set(held_out.tolist())


def test_subset_identity_applies_to_the_stages_it_names() -> None:
    dataset = {"name": "digits", "split": "final", "download": False}
    subset = {"per_class": 10, "fraction": None, "stages": ["student"]}
    whole = stage_data_identity(
        {**dataset, "subset": {"per_class": None, "fraction": None}}, "student"
    )
    assert whole == {"name": "digits", "split": "final"}
    assert stage_data_identity({**dataset, "subset": subset}, "teacher") == whole
    assert stage_data_identity({**dataset, "subset": subset}, "mhan") == whole
    student = stage_data_identity({**dataset, "subset": subset}, "student")
    assert student["subset"] == {"per_class": 10, "fraction": None}
    both = {**subset, "stages": ["student", "mhan"]}
    assert "subset" in stage_data_identity({**dataset, "subset": both}, "mhan")


def test_subset_changes_the_student_identity_only() -> None:
    from mhgd.methods import method_class
    from mhgd.stages import pre_stage_spec, student_spec, teacher_spec
    from tests.helpers import compose_config

    def specs(*overrides: str) -> tuple[str, str, str]:
        cfg = compose_config("method=mhgd", *overrides)
        mhan = method_class("mhgd").pre_stages(cfg.method)[0]
        return (
            teacher_spec(cfg, 0).key,
            pre_stage_spec(cfg, mhan, None, None).key,
            student_spec(cfg, Path("run")).key,
        )

    whole, ten, twenty = (
        specs(),
        specs("dataset.subset.per_class=10"),
        specs("dataset.subset.per_class=20"),
    )
    assert whole[:2] == ten[:2] == twenty[:2]  # teacher and MHAN keep the whole set
    assert len({whole[2], ten[2], twenty[2]}) == 3
    shared = specs("dataset.subset.per_class=10", "dataset.subset.stages=[student,mhan]")
    assert shared[0] == whole[0] and shared[1] != whole[1]


def test_subset_settings_that_cannot_work_are_config_errors(tmp_path: Path) -> None:
    labels = _digits_train(tmp_path).labels
    with pytest.raises(ConfigError, match="has only"):
        stratified_indices(labels, seed=0, per_class=1000)
    both = {"name": "digits", "subset": {"per_class": 1, "fraction": 0.5}}
    with pytest.raises(ConfigError, match="not both"):
        stage_data_identity(both, "student")
    stray = {"name": "digits", "subset": {"per_class": 1, "stages": ["students"]}}
    with pytest.raises(ConfigError, match="unknown"):
        stage_data_identity(stray, "student")
