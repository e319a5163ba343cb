"""Figures of a rebuilt table and of a cell's training curves (PNG and PDF).

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, not pyplot: no global
state and no display needed, so they work the same on a cluster node, in tests and in
notebooks.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mhgd.report.runs import RunHistory
from mhgd.report.tables import Table

CURVE_METRICS = ("score", "train/ce")
_AXIS_LABELS = {"score": "evaluation top-1 (%)", "train/ce": "training cross-entropy"}


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _title(figure: Figure, table: Table) -> None:
    width = int(figure.get_figwidth() * 14)  # characters per line at font size 9
    lines = [textwrap.fill(table.title, width)]
    if table.note:
        lines.append(textwrap.fill(table.note, width))
    figure.suptitle("\n".join(lines), fontsize=9, color="black" if table.is_paper_setting else "C3")


def _sd(value: Any) -> float:
    return 0.0 if pd.isna(value) else float(value)


def _paired_label(entry: pd.Series) -> str:
    """A bar's or point's paired difference from the baseline: "+1.20*" (* = significant)."""
    if pd.isna(entry["diff_mean"]) or entry["pair_n"] in (None, 0):
        return ""
    star = "*" if not pd.isna(entry["significant"]) and bool(entry["significant"]) else ""
    return f"{float(entry['diff_mean']):+.2f}{star}"


def paired_axes(axes: Any, entries: pd.DataFrame, x_of: Mapping[Any, float], baseline: str) -> None:
    """Per-seed paired differences from the baseline with their 95% intervals; filled markers
    are significant at 5%, hollow ones are not."""
    paired = entries.dropna(subset=["diff_mean"])
    paired = paired[paired["pair_n"].fillna(0).astype(int) > 0]
    axes.axhline(0.0, color="0.5", lw=0.8)
    for _, entry in paired.iterrows():
        low, high = entry["diff_ci_low"], entry["diff_ci_high"]
        spread = (
            [[0.0], [0.0]]
            if pd.isna(low)
            else [[entry["diff_mean"] - low], [high - entry["diff_mean"]]]
        )
        significant = not pd.isna(entry["significant"]) and bool(entry["significant"])
        axes.errorbar(
            [x_of[entry["key"]]],
            [entry["diff_mean"]],
            yerr=spread,
            fmt="o",
            capsize=4,
            color="C2",
            mfc="C2" if significant else "white",
        )
        axes.annotate(
            _paired_label(entry) + f" (n={int(entry['pair_n'])})",
            (x_of[entry["key"]], entry["diff_mean"]),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=7,
        )
    axes.set_ylabel(f"top-1 minus {baseline}\n(paired by seed, 95% CI)", fontsize=8)
    axes.grid(alpha=0.3)


def heads_figure(table: Table) -> Figure:
    """Table 4 as a curve: our mean ± sd over seeds against A, and the paper's curve; below,
    each A's paired difference from A = 0."""
    entries = table.entries.assign(heads=table.entries["column"].astype(int))
    entries = entries.assign(key=entries["heads"])
    order = sorted(entries["heads"].unique())
    x_of = {a: i for i, a in enumerate(order)}
    figure = _figure(6, 6)
    axes, below = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    paper = entries.dropna(subset=["paper"]).drop_duplicates("heads")
    axes.plot(
        [x_of[a] for a in paper["heads"]],
        paper["paper"],
        "s--",
        color="0.5",
        label="paper (mean of 5)",
    )
    ours = entries.dropna(subset=["last_mean"])
    one_per_a = not ours["heads"].duplicated().any()
    axes.errorbar(
        [x_of[a] for a in ours["heads"]],
        ours["last_mean"],
        yerr=[_sd(s) for s in ours["last_std"]],
        fmt="o-" if one_per_a else "o",
        capsize=4,
        color="C0",
        label="ours (mean ± sd over seeds)",
    )
    for _, entry in ours.iterrows():
        mark = " !" if entry["flags"] else ""
        axes.annotate(
            f"n={int(entry['n_seeds'])}{mark}",
            (x_of[entry["heads"]], entry["last_mean"]),
            textcoords="offset points",
            xytext=(6, -12),
            fontsize=7,
        )
    axes.set_ylabel("top-1 (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    paired_axes(below, entries, x_of, f"A = {table.baseline}")
    below.set_xticks(range(len(order)), [str(a) for a in order])
    below.set_xlabel("number of heads A (0 = student alone)")
    _title(figure, table)
    return figure


def comparison_figure(table: Table) -> Figure:
    """Tables 1-3 as grouped bars per teacher -> student row: ours (± sd) beside the paper,
    each bar labelled with its paired difference from the student alone (* = significant)."""
    rows = list(dict.fromkeys(table.entries["row"]))
    figure = _figure(7, 2.6 * len(rows))
    for index, row in enumerate(rows):
        axes = figure.add_subplot(len(rows), 1, index + 1)
        entries = table.entries[table.entries["row"] == row]
        cells = entries.groupby("column", sort=False)["cell_id"].transform("size")
        # An entry several cells feed gets no bar: the table lists them, the plot cannot.
        entries = entries.assign(
            last_mean=entries["last_mean"].where(cells == 1),
            column=[
                c if n == 1 else f"{c}\n({n} cells)"
                for c, n in zip(entries["column"], cells, strict=True)
            ],
        ).drop_duplicates("column")
        x = np.arange(len(entries))
        axes.bar(x - 0.2, entries["paper"].astype(float), 0.4, color="0.7", label="paper")
        axes.bar(
            x + 0.2,
            entries["last_mean"].astype(float),
            0.4,
            color="C0",
            yerr=[_sd(s) for s in entries["last_std"]],
            capsize=3,
            label="ours",
        )
        for position, (_, entry) in zip(x, entries.iterrows(), strict=True):
            if label := _paired_label(entry):  # the paired difference from the student alone
                axes.annotate(
                    label,
                    (position + 0.2, 0 if pd.isna(entry["last_mean"]) else entry["last_mean"]),
                    textcoords="offset points",
                    xytext=(0, 3),
                    ha="center",
                    fontsize=7,
                    color="C2",
                )
        axes.set_xticks(x, list(entries["column"]), fontsize=8)
        axes.set_ylabel("top-1 (%)")
        axes.set_title(row, fontsize=9)
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=7, loc="lower right")
    _title(figure, table)
    return figure


def table_figure(table: Table) -> Figure:
    return heads_figure(table) if table.name == "table4" else comparison_figure(table)


def curves_figure(
    histories: Mapping[str, RunHistory],
    title: str,
    metrics: Sequence[str] = CURVE_METRICS,
) -> Figure:
    """Per-epoch curves of one cell: each run faintly (unfinished ones dashed), and the mean
    and a ± sd band over the finished runs."""
    figure = _figure(5 * len(metrics), 3.6)
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), index + 1)
        frame = pd.DataFrame(
            [
                {
                    "run": name,
                    "finished": h.status == "finished",
                    "epoch": r["epoch"],
                    "value": r.get(metric, math.nan),
                }
                for name, h in histories.items()
                for r in h.rows
            ],
            columns=["run", "finished", "epoch", "value"],
        )
        if frame["value"].isna().all():
            axes.set_title(f"{metric}: not logged", fontsize=9)
            continue
        for name, rows in frame.groupby("run", sort=False):
            style = "-" if rows["finished"].all() else "--"
            axes.plot(
                rows["epoch"], rows["value"], style, marker=".", lw=0.8, alpha=0.5, label=name
            )
        finished = frame[frame["finished"]]
        if not finished.empty:
            stats = finished.groupby("epoch")["value"].agg(["mean", "std"]).fillna(0.0)
            axes.plot(stats.index, stats["mean"], color="black", lw=1.8, label="mean (finished)")
            axes.fill_between(
                stats.index,
                stats["mean"] - stats["std"],
                stats["mean"] + stats["std"],
                color="black",
                alpha=0.15,
                label="± sd",
            )
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(_AXIS_LABELS.get(metric, metric))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure


def save_figure(figure: Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """``<stem>.png`` and ``<stem>.pdf`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=150)
    return paths
