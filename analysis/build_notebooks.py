"""Write the analysis notebooks (without outputs): python analysis/build_notebooks.py

The notebooks only call ``mhgd.report``; their first code cell takes the run source and the
setting from the environment, so they run top to bottom unedited (and in the test suite).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMETERS = """\
import os

# The runs: a runs or sweep directory (relative to this notebook) or wandb:<entity>/<project>.
RUNS = os.environ.get("MHGD_RUNS", "../outputs")
# None = the paper's data set; "digits" for the quickstart-sized demo grid.
DATASET = os.environ.get("MHGD_DATASET") or None
# Column filters, e.g. {"beta": 1.0, "split": "final"} (runs without the column are kept).
FILTERS = {}
# Where the .md/.tex/.csv/.png/.pdf files go.
OUT = os.environ.get("MHGD_REPORTS", "../outputs/reports")"""

IMPORTS = """\
from IPython.display import Image, Markdown, display

import mhgd.report as report"""

PAIRED_NOTE = (
    "## Paired differences from the baseline\n\n"
    "Runs of two cells that share a seed are paired (same initialisation, batch order and, "
    "with `dataset.subset`, the same training images). Each entry below is compared with its "
    "row's baseline ({baseline}) by the per-seed differences: their mean, sd, the paired t "
    "statistic, its p value and the 95% interval of the mean difference; `significant` means "
    "p < 0.05."
)

PAIRED = """\
paired = table.entries[table.entries["pair_n"].notna()]
columns = ["row", "column", "pair_n", "diff_mean", "diff_sd", "diff_t", "diff_p"]
columns += ["diff_ci_low", "diff_ci_high", "significant", "graph_kl_mean"]
if paired.empty:
    display(Markdown("no entry shares seeds with its baseline yet"))
else:
    display(paired[columns])"""


def _notebook(cells: list) -> nbformat.NotebookNode:
    for number, cell in enumerate(cells):
        cell["id"] = f"cell-{number}"  # stable ids: rebuilding gives the same file
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def table4() -> nbformat.NotebookNode:
    return _notebook(
        [
            new_markdown_cell(
                "# Table 4: accuracy against the number of heads A\n\n"
                "VGG16 -> VGG7, every entry the mean over seeds of the last-epoch top-1, next "
                "to the paper's number. Entries with fewer than 5 finished seeds, failed runs "
                "or duplicated seeds carry a `!` and say why in the flags column."
            ),
            new_code_cell(PARAMETERS),
            new_code_cell(IMPORTS),
            new_code_cell(
                'table = report.rebuild_table("table4", RUNS, dataset=DATASET, filters=FILTERS)\n'
                "display(Markdown(report.to_markdown(table)))"
            ),
            new_code_cell(
                "paths, figure = report.write_report(table, OUT)\n"
                'display(Image(filename=str(next(p for p in paths if p.suffix == ".png"))))\n'
                "paths"
            ),
            new_markdown_cell(PAIRED_NOTE.format(baseline="A = 0, the student alone")),
            new_code_cell(PAIRED),
            new_markdown_cell("## Training curves of the entry with the most finished seeds"),
            new_code_cell(
                'filled = table.entries.dropna(subset=["cell_id"])\n'
                "if filled.empty:\n"
                '    print("no runs feed this table yet")\n'
                "else:\n"
                '    cell = filled.sort_values("n_seeds").iloc[-1]["cell_id"]\n'
                "    runs = report.select_runs(RUNS, FILTERS)\n"
                "    cell_id, curves = report.cell_curves(runs, cell)\n"
                '    png = os.path.join(OUT, f"curves-{cell_id}.png")\n'
                "    curves.savefig(png, dpi=120)\n"
                "    display(Image(filename=png))"
            ),
        ]
    )


def tables() -> nbformat.NotebookNode:
    return _notebook(
        [
            new_markdown_cell(
                "# Tables 1-3: distillation methods against the paper\n\n"
                "TN = the teacher trained alone, SN = the student alone, then one column per "
                "method. Methods without runs show `-`. An entry fed by several cells (say "
                "MHGD with A = 1 and A = 8) lists each, flagged: narrow it with `FILTERS`."
            ),
            new_code_cell(PARAMETERS),
            new_code_cell(IMPORTS),
            new_code_cell(
                "tables = {}\n"
                'for name in ("table1", "table2", "table3"):\n'
                "    table = report.rebuild_table(name, RUNS, dataset=DATASET, filters=FILTERS)\n"
                "    display(Markdown(report.to_markdown(table)))\n"
                "    paths, figure = report.write_report(table, OUT)\n"
                '    display(Image(filename=str(next(p for p in paths if p.suffix == ".png"))))\n'
                "    tables[name] = table"
            ),
            new_markdown_cell(PAIRED_NOTE.format(baseline="SN, the student alone")),
            new_code_cell(
                "for table in tables.values():\n"
                '    display(Markdown(f"**{table.title}**"))\n'
                + "\n".join("    " + line for line in PAIRED.splitlines())
            ),
        ]
    )


NOTEBOOKS = {"table4.ipynb": table4, "tables.ipynb": tables}


def main() -> None:
    for name, build in NOTEBOOKS.items():
        nbformat.write(build(), HERE / name)


if __name__ == "__main__":
    main()
