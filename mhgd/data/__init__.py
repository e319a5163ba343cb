"""Data sets held in memory as uint8 tensors, and batched augmentation on the training device."""

from mhgd.data.augment import flip_and_crop, to_unit_range
from mhgd.data.batches import Batches
from mhgd.data.imageset import DataSpec, ImageSet
from mhgd.data.registry import DATASETS, SPLITS, DatasetSource, load_dataset
from mhgd.data.split import SPLIT_SEED, stratified_holdout

__all__ = [
    "DATASETS",
    "SPLITS",
    "SPLIT_SEED",
    "Batches",
    "DataSpec",
    "DatasetSource",
    "ImageSet",
    "flip_and_crop",
    "load_dataset",
    "stratified_holdout",
    "to_unit_range",
]
