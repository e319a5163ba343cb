"""Data sets held in memory as uint8 tensors, and batched augmentation on the training device."""

from mhgd.data.augment import flip_and_crop, to_unit_range
from mhgd.data.batches import Batches
from mhgd.data.imageset import DataSpec, ImageSet
from mhgd.data.registry import DATASETS, SPLITS, DatasetSource, load_dataset
from mhgd.data.split import SPLIT_SEED, stratified_holdout
from mhgd.data.subset import (
    describe_subset,
    stage_data_identity,
    stratified_indices,
    training_set,
    training_size,
)

__all__ = [
    "DATASETS",
    "SPLITS",
    "SPLIT_SEED",
    "Batches",
    "DataSpec",
    "DatasetSource",
    "ImageSet",
    "describe_subset",
    "flip_and_crop",
    "load_dataset",
    "stage_data_identity",
    "stratified_holdout",
    "stratified_indices",
    "to_unit_range",
    "training_set",
    "training_size",
]
