"""The paper's numbers (method.md section 8), transcribed once so every table and plot cites them.

Top-1 accuracy (%) on the test set, each the mean of 5 runs in the paper. Model and data set
names are the ones the configs use (``model.name``, ``dataset.name``); ``LABELS`` turns them
into the paper's wording.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LABELS: Mapping[str, str] = {
    "cifar100": "CIFAR-100",
    "tinyimagenet": "TinyImageNet",
    "vgg16": "VGG16",
    "vgg7": "VGG7",
    "wrn22_4": "WRN-22-4",
    "wrn10_4": "WRN-10-4",
    "resnet": "ResNet",
    "mobilenet": "MobileNet",
    "modified_vgg": "modified VGG",
}

# Columns of Tables 1-3: "teacher" is the TN's own accuracy, "none" the student alone (SN);
# the rest are method names (``method.name``).
COLUMN_LABELS: Mapping[str, str] = {
    "teacher": "TN",
    "none": "SN",
    "soft_logits": "Soft-logits",
    "fsp": "FSP",
    "ab": "AB",
    "kdsvd": "KD-SVD",
    "kdsvdf": "KD-SVDF",
    "mhgd": "MHGD",
}


def label(name: str) -> str:
    """The paper's name for a model or data set (the config name when the paper has none)."""
    return LABELS.get(name, name)


@dataclass(frozen=True)
class PaperRow:
    """One teacher -> student pair of a table and the paper's number in each column."""

    teacher: str
    student: str
    numbers: Mapping[str, float]


@dataclass(frozen=True)
class PaperTable:
    """A comparison table of the paper: its data set, its columns and its rows."""

    name: str
    caption: str
    dataset: str
    columns: tuple[str, ...]
    rows: tuple[PaperRow, ...]


_ALL = ("teacher", "none", "soft_logits", "fsp", "ab", "kdsvd", "kdsvdf", "mhgd")
_TABLE3 = ("none", "soft_logits", "fsp", "ab", "kdsvd", "mhgd")


def _row(teacher: str, student: str, columns: tuple[str, ...], *numbers: float) -> PaperRow:
    return PaperRow(teacher, student, dict(zip(columns, numbers, strict=True)))


TABLE1 = PaperTable(
    "table1",
    "Table 1: top-1 accuracy (%) of distillation methods",
    "cifar100",
    _ALL,
    (
        _row("vgg16", "vgg7", _ALL, 67.99, 59.97, 60.95, 61.87, 64.56, 64.25, 64.38, 67.02),
        _row("wrn22_4", "wrn10_4", _ALL, 77.22, 71.62, 71.88, 71.57, 72.23, 71.83, 71.82, 72.79),
    ),
)

TABLE2 = PaperTable(
    "table2",
    "Table 2: top-1 accuracy (%) of distillation methods",
    "tinyimagenet",
    _ALL,
    (
        _row("vgg16", "vgg7", _ALL, 56.30, 52.40, 53.78, 54.85, 54.99, 55.33, 55.35, 56.35),
        _row("wrn22_4", "wrn10_4", _ALL, 61.31, 55.91, 56.00, 56.04, 56.53, 55.72, 55.95, 56.90),
    ),
)

TABLE3 = PaperTable(
    "table3",
    "Table 3: top-1 accuracy (%) of students of WRN-22-4 with other architectures",
    "cifar100",
    _TABLE3,
    (
        _row("wrn22_4", "modified_vgg", _TABLE3, 69.76, 70.51, 69.44, 71.24, 70.31, 71.52),
        _row("wrn22_4", "mobilenet", _TABLE3, 66.18, 67.35, 60.35, 67.84, 67.03, 68.32),
        _row("wrn22_4", "resnet", _TABLE3, 71.57, 71.81, 70.40, 71.55, 71.55, 72.74),
    ),
)

COMPARISON_TABLES: Mapping[str, PaperTable] = {t.name: t for t in (TABLE1, TABLE2, TABLE3)}

# Table 4: the number of heads A, VGG16 -> VGG7 on CIFAR-100; A = 0 is the student alone.
TABLE4_CAPTION = "Table 4: top-1 accuracy (%) against the number of heads A"
TABLE4_DATASET = "cifar100"
TABLE4_TEACHER = "vgg16"
TABLE4_STUDENT = "vgg7"
TABLE4_HEADS: Mapping[int, float] = {
    0: 59.97,
    1: 65.71,
    2: 66.41,
    4: 67.01,
    8: 67.02,
    16: 66.70,
}
