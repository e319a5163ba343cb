"""The paper's tables rebuilt from cells: which cell feeds which entry, next to the paper.

An entry is chosen by (stage, method, data set, student, teacher, heads): TN is a main teacher
run, SN a student trained alone (method ``none``, or MHGD with A = 0: the same computation, so
Table 1's SN and Table 4's A = 0 are one entry), a method column that method's students of
the row's teacher, MHGD any head count above 0, and Table 4's column A the MHGD students with
A heads (A = 0, the student alone, has no teacher). Every entry is one row of ``Table.entries``;
an entry no run feeds keeps a row with no numbers, and an entry several cells feed (say two
values of beta) gets one row per cell, flagged, never a pooled mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mhgd.errors import ConfigError
from mhgd.report.aggregate import STATISTICS
from mhgd.report.paired import PAIRED_COLUMNS, paired_row
from mhgd.report.paper import (
    COLUMN_LABELS,
    COMPARISON_TABLES,
    TABLE4_CAPTION,
    TABLE4_DATASET,
    TABLE4_HEADS,
    TABLE4_STUDENT,
    TABLE4_TEACHER,
    PaperRow,
    PaperTable,
    label,
)

TABLE_NAMES = ("table1", "table2", "table3", "table4")
ENTRY_KEYS = ("table", "setting", "row", "column", "paper")
PAPER_SETTING = "paper setting"
TABLE_SPLIT = "final"  # the paper's numbers are test-set numbers
BASELINES = {"table4": "0", "table1": "SN", "table2": "SN", "table3": "SN"}
"""The entry of each row every other entry is compared with, seed by seed (mhgd.report.paired):
Table 4's A = 0 and Tables 1-3's student alone."""


def entry_columns(cells: pd.DataFrame) -> tuple[str, ...]:
    return (*ENTRY_KEYS, *cells.columns, *PAIRED_COLUMNS, "diff")


def _description(cells: pd.DataFrame) -> list[str]:
    return [c for c in cells.columns if c != "cell_id" and c not in STATISTICS]


@dataclass(frozen=True)
class Slot:
    """One entry of a table and the runs that may fill it (``model`` is the trained network:
    the teacher itself for a TN entry)."""

    row: str
    column: str
    paper: float | None
    stage: str
    method: str
    dataset: str
    model: str
    teacher: str | None
    heads_min: int | None = None
    heads_max: int | None = None

    def matches(self, cells: pd.DataFrame) -> pd.Series:
        teacher = (
            cells["teacher"].isna() if self.teacher is None else cells["teacher"] == self.teacher
        )
        keep = (
            (cells["stage"] == self.stage)
            & (cells["dataset"] == self.dataset)
            & (cells["student"] == self.model)
            & teacher
        )
        if self.stage == "student" and self.teacher is None:
            # The student alone: method none, or MHGD with A = 0 (the same computation).
            alone = (cells["method"] == "none") | (cells["heads"].fillna(-1) == 0)
            return (keep & alone).astype(bool)
        keep &= cells["method"] == self.method
        if self.heads_min is not None:
            keep &= cells["heads"].fillna(-1) >= self.heads_min
        if self.heads_max is not None:
            keep &= cells["heads"].fillna(-1) <= self.heads_max
        return keep.astype(bool)


@dataclass
class Table:
    """A rebuilt table: long-format entries plus what a reader must know to read them."""

    name: str
    title: str
    note: str | None
    keys: tuple[tuple[str, str], ...]  # (entry column, header) that identify an entry
    entries: pd.DataFrame
    baseline: str | None = None  # the column every entry of a row is paired with

    @property
    def baseline_label(self) -> str | None:
        """The baseline in the table's words: "A = 0" (Table 4) or "SN"."""
        if self.baseline is None:
            return None
        return f"A = {self.baseline}" if self.keys == (("column", "A"),) else self.baseline

    @property
    def is_paper_setting(self) -> bool:
        return self.note is None


def _method_slot(row: str, column: str, paper: float | None, dataset: str, pair: PaperRow) -> Slot:
    """TN: the teacher's own main runs; SN: the student alone; else that method's students."""
    common = {
        "row": row,
        "column": COLUMN_LABELS.get(column, column),
        "paper": paper,
        "dataset": dataset,
    }
    if column == "teacher":
        return Slot(**common, stage="teacher", method="none", model=pair.teacher, teacher=None)
    if column == "none":
        return Slot(**common, stage="student", method="none", model=pair.student, teacher=None)
    return Slot(
        **common,
        stage="student",
        method=column,
        model=pair.student,
        teacher=pair.teacher,
        heads_min=1 if column == "mhgd" else None,
    )


def comparison_slots(paper: PaperTable, dataset: str) -> list[Slot]:
    """Tables 1-3: every (pair, column) of the paper's table, on ``dataset``."""
    slots = []
    for pair in paper.rows:
        row = f"{label(pair.teacher)} -> {label(pair.student)}"
        if paper.name == "table3":  # one teacher for the whole table: rows name the student
            row = label(pair.student)
        for column in paper.columns:
            slots.append(_method_slot(row, column, pair.numbers[column], dataset, pair))
    return slots


def heads_slots(cells: pd.DataFrame, dataset: str, teacher: str, student: str) -> list[Slot]:
    """Table 4: the paper's head counts plus any other count the runs have."""
    row = f"{label(teacher)} -> {label(student)}"
    common = {
        "row": row,
        "stage": "student",
        "method": "mhgd",
        "dataset": dataset,
        "model": student,
    }
    distilled = Slot(**common, column="", paper=None, teacher=teacher, heads_min=1)
    found = {int(a) for a in cells.loc[distilled.matches(cells), "heads"].dropna()}
    return [
        Slot(
            **common,
            column=str(heads),
            paper=TABLE4_HEADS.get(heads),
            teacher=teacher if heads > 0 else None,  # A = 0 is the student alone
            heads_min=heads,
            heads_max=heads,
        )
        for heads in sorted(set(TABLE4_HEADS) | found)
    ]


def _differences(candidates: pd.DataFrame) -> list[str]:
    return [c for c in _description(candidates) if candidates[c].astype(str).nunique() > 1]


def _other_splits(slot: Slot, others: pd.DataFrame, split: str) -> str:
    """The note of an entry that only runs of another split (a sweep's tune trials) would fill."""
    found = sorted({str(s) for s in others.loc[slot.matches(others), "split"]})
    if not found:
        return ""
    return (
        f"missing: only {'/'.join(found)}-split runs (not the {split} split this table "
        "reports) match this entry"
    )


def fill(
    slots: list[Slot], cells: pd.DataFrame, table: str, setting: str, split: str = TABLE_SPLIT
) -> pd.DataFrame:
    """Entries of ``slots`` from the ``split`` cells: one row per (slot, matching cell)."""
    rows = []
    of_split = cells["split"].astype(str) == split
    others, cells = cells[~of_split], cells[of_split]
    for slot in slots:
        base = {
            "table": table,
            "setting": setting,
            "row": slot.row,
            "column": slot.column,
            "paper": slot.paper,
            "flags": "",
        }
        candidates = cells[slot.matches(cells)]
        if candidates.empty:
            rows.append({**base, "flags": _other_splits(slot, others, split)})
            continue
        differ = _differences(candidates)
        for _, cell in candidates.iterrows():
            entry = {**base, **cell.to_dict()}
            if len(candidates) > 1:
                which = ", ".join(f"{c}={cell[c]}" for c in differ) or "compare their configs"
                ambiguity = (
                    f"one of {len(candidates)} cells for this entry (this one: {which}); "
                    "pick one with --filter"
                )
                entry["flags"] = "; ".join(f for f in (ambiguity, entry["flags"]) if f)
            rows.append(entry)
    entries = pd.DataFrame(rows, columns=list(entry_columns(cells)))
    entries = entries.astype({"heads": "Int64", "mhan_epochs": "Int64", "n_seeds": "Int64"})
    entries["diff"] = entries["last_mean"].astype(float) - entries["paper"].astype(float)
    return entries


def pair_with_baseline(entries: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Fill PAIRED_COLUMNS: each student entry against its row's ``baseline`` entry.

    A row whose baseline entry has no runs, or several cells (ambiguous), pairs nothing; the
    teacher (TN) is not a student and is never paired.
    """
    entries = entries.astype({column: object for column in PAIRED_COLUMNS})
    for row in entries["row"].unique():
        in_row = entries["row"] == row
        base = entries[in_row & (entries["column"] == baseline) & entries["cell_id"].notna()]
        if len(base) != 1:
            continue
        reference = base.iloc[0]
        for index, entry in entries[in_row].iterrows():
            if (
                not isinstance(entry["cell_id"], str)
                or entry["cell_id"] == reference["cell_id"]
                or entry["stage"] != "student"
            ):
                continue
            paired = paired_row(
                entry["last_by_seed"], reference["last_by_seed"], reference["cell_id"]
            )
            for column, value in paired.items():
                entries.at[index, column] = value
    return entries


def _demo_note(
    paper_dataset: str, dataset: str, paper_pair: str, pair: str, split: str
) -> str | None:
    """What makes a table not the paper's setting (None when it is), for every output."""
    parts = []
    if split != TABLE_SPLIT:
        parts.append(f"{split}-split runs: validation numbers, not the paper's test set")
    if dataset != paper_dataset:
        parts.append(
            f"{label(dataset)} demo, not the paper's setting (the paper used "
            f"{label(paper_dataset)})"
        )
    if pair != paper_pair:
        parts.append(f"{pair} is not the paper's pair ({paper_pair})")
    return "; ".join(parts) or None


def _heads_table(
    cells: pd.DataFrame, dataset: str, teacher: str, student: str, split: str
) -> Table:
    pair = f"{label(teacher)} -> {label(student)}"
    paper_pair = f"{label(TABLE4_TEACHER)} -> {label(TABLE4_STUDENT)}"
    note = _demo_note(TABLE4_DATASET, dataset, paper_pair, pair, split)
    slots = heads_slots(cells[cells["split"] == split], dataset, teacher, student)
    entries = fill(slots, cells, "table4", note or PAPER_SETTING, split)
    title = f"{TABLE4_CAPTION}, {pair}, {label(dataset)}"
    baseline = BASELINES["table4"]
    entries = pair_with_baseline(entries, baseline)
    return Table("table4", title, note, (("column", "A"),), entries, baseline)


def _comparison_table(cells: pd.DataFrame, paper: PaperTable, dataset: str, split: str) -> Table:
    note = _demo_note(paper.dataset, dataset, "", "", split)
    slots = comparison_slots(paper, dataset)
    entries = fill(slots, cells, paper.name, note or PAPER_SETTING, split)
    title = f"{paper.caption}, {label(dataset)}"
    row_header = "TN -> SN"
    if paper.name == "table3":
        title += f", TN = {label(paper.rows[0].teacher)}"
        row_header = "SN"
    baseline = BASELINES[paper.name]
    entries = pair_with_baseline(entries, baseline)
    keys = (("row", row_header), ("column", "method"))
    return Table(paper.name, title, note, keys, entries, baseline)


def build_table(
    name: str,
    cells: pd.DataFrame,
    *,
    dataset: str | None = None,
    teacher: str | None = None,
    student: str | None = None,
    split: str = TABLE_SPLIT,
) -> Table:
    """Table ``name`` from aggregated cells, on the paper's setting unless told otherwise.

    Only cells of ``split`` count (the test set's ``final`` by default): a sweep's tune trial
    never lands in a test-set table; an entry only such runs would fill stays empty, with a note.
    """
    if name not in TABLE_NAMES:
        raise ConfigError(f"unknown table {name!r}: choose one of {list(TABLE_NAMES)}")
    if name == "table4":
        return _heads_table(
            cells,
            dataset or TABLE4_DATASET,
            teacher or TABLE4_TEACHER,
            student or TABLE4_STUDENT,
            split,
        )
    if teacher or student:
        raise ConfigError(
            f"{name} has fixed teacher/student pairs: --teacher and --student only apply "
            "to table4 (--dataset works for every table)"
        )
    paper = COMPARISON_TABLES[name]
    return _comparison_table(cells, paper, dataset or paper.dataset, split)
