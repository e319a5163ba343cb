"""Rebuilding the paper's tables from logged runs: load, aggregate over seeds, render, plot.

    runs = load_runs("outputs")                      # or "wandb:<entity>/<project>"
    table = build_table("table4", aggregate(runs))   # or rebuild_table("table4", "outputs")
    print(to_markdown(table))

Reads run records (``mhgd.records``) and W&B; never imports the training code.
"""

from mhgd.report.aggregate import EXPECTED_SEEDS, aggregate
from mhgd.report.build import cell_curves, rebuild_table, select_runs, write_report
from mhgd.report.paired import paired_difference
from mhgd.report.plots import curves_figure, table_figure
from mhgd.report.render import to_csv, to_latex, to_markdown
from mhgd.report.runs import filter_runs, load_runs
from mhgd.report.tables import Table, build_table

__all__ = [
    "EXPECTED_SEEDS",
    "Table",
    "aggregate",
    "build_table",
    "cell_curves",
    "curves_figure",
    "filter_runs",
    "load_runs",
    "paired_difference",
    "rebuild_table",
    "select_runs",
    "table_figure",
    "to_csv",
    "to_latex",
    "to_markdown",
    "write_report",
]
