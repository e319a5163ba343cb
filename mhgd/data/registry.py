"""Data sets by name, and the final/tune split policy shared by all of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mhgd.data.imageset import DataSpec, ImageSet
from mhgd.data.split import stratified_holdout
from mhgd.registry import Registry

Loader = Callable[..., tuple[ImageSet, ImageSet]]
"""``loader(root, *, download) -> (training set, labelled test set)``."""

SPLITS = ("final", "tune")


@dataclass(frozen=True)
class DatasetSource:
    """How to load one data set, what it is, and how much of it the tune split holds out."""

    load: Loader
    spec: DataSpec
    tune_val_size: int


DATASETS: Registry[DatasetSource] = Registry(
    "data set",
    "mhgd.data",
    "add a loader module to mhgd/data/ whose loader is decorated with @register_dataset(spec, "
    "tune_val_size) and mhgd/conf/dataset/<name>.yaml; see README 'Extending'",
)


def register_dataset(spec: DataSpec, tune_val_size: int) -> Callable[[Loader], Loader]:
    """Decorator for a loader: registers it as the data set ``spec.name``."""

    def add(load: Loader) -> Loader:
        DATASETS.add(spec.name, DatasetSource(load, spec, tune_val_size))
        return load

    return add


def load_dataset(
    name: str,
    root: str | Path,
    *,
    split: str = "final",
    val_size: int | None = None,
    download: bool = False,
) -> tuple[ImageSet, ImageSet, DataSpec]:
    """Return (training set, evaluation set, spec), on the CPU.

    ``split="final"`` trains on the whole training set and evaluates on the test set.
    ``split="tune"`` holds out a fixed stratified ``val_size`` subset of the training set
    (default per data set: CIFAR-100 5k, TinyImageNet 10k, digits 290) and evaluates on it, so
    hyper-parameter sweeps never see the test set.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    if val_size is not None and split != "tune":
        raise ValueError(
            f"val_size={val_size} only applies to split='tune'; set it to null for split={split!r}"
        )
    source = DATASETS.get(name)
    train, test = source.load(root, download=download)
    if split == "final":
        return train, test, source.spec
    holdout_size = source.tune_val_size if val_size is None else val_size
    kept, held_out = stratified_holdout(train.labels, holdout_size)
    return train.subset(kept), train.subset(held_out), source.spec
