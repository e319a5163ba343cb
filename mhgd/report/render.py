"""A rebuilt table as text: Markdown (also what the terminal shows), LaTeX and CSV.

The text tables show per entry the paper's number, ours (mean ± standard deviation over the
finished seeds of the last-epoch top-1), the 95% interval, the difference, the best-epoch top-1,
the seed count, the cell id (for ``mhgd-report curves``) and the flags; an entry with flags
carries a "!" after its number. The CSV holds every statistic at full precision.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mhgd.report.tables import Table

MISSING = "-"
FLAG_MARK = "!"
SIGNIFICANT_MARK = "*"
LEGEND = (
    "ours: mean ± sd over finished seeds of the last-epoch top-1 (%); 95% CI: Student-t "
    "half-width; best: the best-epoch top-1; ! = flagged, see the flags column."
)
PAIRED_LEGEND = (
    "vs {baseline}: mean of the per-seed differences from the {baseline} entry of the same row "
    "(runs paired by seed), [95% interval], paired t-test p; * = significant at 5%."
)
GRAPH_KL_LEGEND = (
    "graph KL: the student's held-out graph KL to the teacher through frozen MHAN heads "
    "(mean ± sd over seeds, last epoch; lower = closer to the teacher's graphs); [key]: the "
    "MHAN that measured it (MHGD: its own; others: probe_mhan): compare only equal keys."
)
_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"}
_LATEX_SPECIAL.update(
    {"~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value)


def _number(value: object, signed: bool = False) -> str:
    if _missing(value):
        return MISSING
    return f"{float(value):+.2f}" if signed else f"{float(value):.2f}"


def _mean_sd(mean: object, sd: object) -> str:
    text = _number(mean)
    return text if text == MISSING or _number(sd) == MISSING else f"{text} ± {_number(sd)}"


def _paired(entry: dict, baseline: str | None) -> str:
    """The paired difference from the row's baseline, in words and numbers."""
    if baseline is not None and entry["column"] == baseline and isinstance(entry["cell_id"], str):
        return "baseline"
    if _missing(entry.get("pair_n")) or not entry["pair_n"]:
        return MISSING
    text = _number(entry["diff_mean"], signed=True)
    if not _missing(entry["diff_ci_low"]):
        low, high = _number(entry["diff_ci_low"], True), _number(entry["diff_ci_high"], True)
        text += f" [{low}, {high}]"
    if not _missing(entry["diff_p"]):
        text += f" p={float(entry['diff_p']):.3f}"
    text += f" (n={int(entry['pair_n'])})"
    significant = not _missing(entry["significant"]) and bool(entry["significant"])
    return text + (f" {SIGNIFICANT_MARK}" if significant else "")


def _graph_kl(entry: dict) -> str:
    if _missing(entry["graph_kl_mean"]):
        return MISSING
    text = f"{float(entry['graph_kl_mean']):.3g}"
    if not _missing(entry["graph_kl_std"]):
        text += f" ± {entry['graph_kl_std']:.2g}"
    mhan = entry["graph_kl_mhan"]
    return f"{text} [{mhan}]" if isinstance(mhan, str) else text


def _has_graph_kl(table: Table) -> bool:
    return bool(table.entries["graph_kl_mean"].notna().any())


def display_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and rows of strings, the same for every text format."""
    graph_kl = _has_graph_kl(table)
    header = [h for _, h in table.keys] + [
        "paper",
        "ours",
        "95% CI",
        "ours - paper",
        "best",
        *([f"vs {table.baseline_label}"] if table.baseline else []),
        *(["graph KL"] if graph_kl else []),
        "seeds",
        "cell",
        "flags",
    ]
    rows = []
    for entry in table.entries.to_dict("records"):
        ours = _mean_sd(entry["last_mean"], entry["last_std"])
        flags = entry["flags"]
        ci = _number(entry["last_ci95"])
        rows.append(
            [str(entry[key]) for key, _ in table.keys]
            + [
                _number(entry["paper"]),
                f"{ours} {FLAG_MARK}" if flags else ours,
                MISSING if ci == MISSING else f"± {ci}",
                _number(entry["diff"], signed=True),
                _mean_sd(entry["best_mean"], entry["best_std"]),
                *([_paired(entry, table.baseline)] if table.baseline else []),
                *([_graph_kl(entry)] if graph_kl else []),
                MISSING if pd.isna(entry["n_seeds"]) else str(int(entry["n_seeds"])),
                entry["cell_id"] if isinstance(entry["cell_id"], str) else MISSING,
                f"{FLAG_MARK} {flags}" if flags else "",
            ]
        )
    return header, rows


def legend(table: Table) -> str:
    parts = [LEGEND]
    if table.baseline:
        parts.append(PAIRED_LEGEND.format(baseline=table.baseline_label))
    if _has_graph_kl(table):
        parts.append(GRAPH_KL_LEGEND)
    return " ".join(parts)


def heading(table: Table) -> str:
    return table.title + (f" [{table.note}]" if table.note else "")


def _markdown_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def to_markdown(table: Table) -> str:
    header, rows = display_rows(table)
    lines = [f"**{table.title}**", ""]
    if table.note:
        lines += [f"> **{table.note}.**", ""]
    lines += [_markdown_line(header), _markdown_line(["---"] * len(header))]
    lines += [*map(_markdown_line, rows), "", legend(table)]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    escaped = "".join(_LATEX_SPECIAL.get(c, c) for c in text)
    return escaped.replace("±", r"$\pm$").replace("->", r"$\to$")


def to_latex(table: Table) -> str:
    header, rows = display_rows(table)
    body = [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in rows]
    return (
        "\n".join(
            [
                r"% needs \usepackage{booktabs}",
                r"\begin{table}[t]",
                r"\centering\small",
                rf"\caption{{{_latex_escape(heading(table))}. {_latex_escape(legend(table))}}}",
                rf"\label{{tab:{table.name}}}",
                r"\begin{tabular}{"
                + "l" * len(table.keys)
                + "r" * (len(header) - len(table.keys) - 1)
                + "l}",
                r"\toprule",
                " & ".join(_latex_escape(h) for h in header) + r" \\",
                r"\midrule",
                *body,
                r"\bottomrule",
                r"\end{tabular}",
                r"\end{table}",
            ]
        )
        + "\n"
    )


def to_csv(table: Table) -> str:
    return table.entries.to_csv(index=False)


def write_table(table: Table, out_dir: str | Path) -> list[Path]:
    """``<name>.md``, ``.tex`` and ``.csv`` in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, render in ((".md", to_markdown), (".tex", to_latex), (".csv", to_csv)):
        path = out / f"{table.name}{suffix}"
        path.write_text(render(table))
        paths.append(path)
    return paths
