"""From run sources to a finished report: the steps the command and the notebooks share."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from mhgd.report.aggregate import EXPECTED_SEEDS, aggregate
from mhgd.report.plots import curves_figure, save_figure, table_figure
from mhgd.report.render import write_table
from mhgd.report.runs import cell_histories, filter_runs, load_runs, resolve_cell
from mhgd.report.tables import TABLE_SPLIT, Table, build_table


def default_out_dir() -> Path:
    """Reports go next to the runs (``$MHGD_OUTPUTS/reports``), which git already ignores."""
    return Path(os.environ.get("MHGD_OUTPUTS", "outputs")) / "reports"


def select_runs(
    sources: str | Path | Sequence[str | Path],
    filters: Mapping[str, Any] | None = None,
    wandb_filters: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The runs of the sources, narrowed by column filters (see ``filter_runs``)."""
    return filter_runs(load_runs(sources, wandb_filters), dict(filters or {}))


def rebuild_table(
    name: str,
    sources: str | Path | Sequence[str | Path],
    *,
    dataset: str | None = None,
    teacher: str | None = None,
    student: str | None = None,
    filters: Mapping[str, Any] | None = None,
    wandb_filters: Mapping[str, Any] | None = None,
    expected_seeds: int = EXPECTED_SEEDS,
    split: str = TABLE_SPLIT,
) -> Table:
    """Table ``name`` (table1..table4) from the runs of ``sources`` on ``split``."""
    runs = select_runs(sources, filters, wandb_filters)
    cells = aggregate(runs, expected_seeds)
    return build_table(name, cells, dataset=dataset, teacher=teacher, student=student, split=split)


def write_report(table: Table, out_dir: str | Path) -> tuple[list[Path], Figure]:
    """The table as .md/.tex/.csv and its figure as .png/.pdf, in ``out_dir``."""
    figure = table_figure(table)
    return [*write_table(table, out_dir), *save_figure(figure, out_dir, table.name)], figure


def cell_curves(runs: pd.DataFrame, cell: str) -> tuple[str, Figure]:
    """The full cell id a prefix names, and the figure of its runs' per-epoch curves."""
    cell_id = resolve_cell(runs, cell)
    first = runs[(runs["cell_id"] == cell_id) & (runs["role"] == "main")].iloc[0]
    what = f"{first['method']} {first['student']}"
    if first["teacher"]:
        what += f" <- {first['teacher']}"
    if not pd.isna(first["heads"]):
        what += f", A={first['heads']}, beta={first['beta']}, MHAN epochs={first['mhan_epochs']}"
    title = f"cell {cell_id}: {first['stage']} {what}, {first['dataset']} ({first['split']})"
    return cell_id, curves_figure(cell_histories(runs, cell_id), title)
