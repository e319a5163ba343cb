"""Seeds into cells: mean, spread and a 95% interval per experimental cell, with its caveats.

Only main runs are experiments (cached teachers and MHANs are artifacts). The statistics use
the finished runs, one value per seed: should one seed have finished twice (the same cell run
in two output folders), its runs are averaged into that seed's value first, so no seed weighs
more than another, and the cell is flagged. Cells short of the expected seeds, or with failed,
pruned, preempted or unfinished runs, are flagged too; the numbers are never silently the mean
of something else than the paper's protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from scipy import stats

from mhgd.report.schema import hparam_columns

EXPECTED_SEEDS = 5  # method.md section 6: every reported number is the mean of 5 trials
DESCRIPTION_BASE = ("stage", "method", "dataset", "split", "subset", "teacher", "student")
UNFINISHED = ("failed", "pruned", "preempted", "running")
SCORES = ("last", "best")
STATISTICS: tuple[str, ...] = (
    "n_seeds",
    "seeds",
    *(f"{score}_{stat}" for score in SCORES for stat in ("mean", "std", "ci95")),
    "graph_kl_mean",
    "graph_kl_std",
    "graph_kl_mhan",
    "last_by_seed",
    *(f"n_{status}" for status in UNFINISHED),
    "duplicated_seeds",
    "flags",
)
"""``last_by_seed``: {seed: last-epoch top-1} of the finished runs, for paired comparisons;
``graph_kl_*``: the held-out graph KL to the teacher over the seeds that measured it."""


def description_columns(runs: pd.DataFrame) -> tuple[str, ...]:
    """What tells cells apart in words: the base description and every hyper-parameter."""
    return (*DESCRIPTION_BASE, *hparam_columns(runs))


def cell_columns(description: Sequence[str]) -> tuple[str, ...]:
    return ("cell_id", *description, *STATISTICS)


def summarise(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the half-width of the Student-t 95% interval."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan, math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, std, float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)


def _flags(n_seeds: int, expected: int, counts: dict[str, int], duplicated: list[int]) -> str:
    flags = []
    if n_seeds < expected:
        flags.append(f"{n_seeds} of {expected} seeds finished")
    flags += [f"{counts[s]} {s}" for s in UNFINISHED if counts[s]]
    if duplicated:
        flags.append(f"seed {','.join(map(str, duplicated))} finished more than once")
    return "; ".join(flags)


def _cell(runs: pd.DataFrame, expected: int, description: Sequence[str]) -> dict[str, object]:
    finished = runs[runs["status"] == "finished"]
    per_seed = finished.groupby("seed")[["last_top1", "best_top1", "last_graph_kl"]].mean()
    run_counts = finished["seed"].value_counts()
    duplicated = sorted(int(s) for s in run_counts[run_counts > 1].index)
    counts = {s: int((runs["status"] == s).sum()) for s in UNFINISHED}
    first = runs.iloc[0]
    row: dict[str, object] = {"cell_id": first["cell_id"], **{c: first[c] for c in description}}
    row["n_seeds"] = len(per_seed)
    row["seeds"] = ",".join(str(int(s)) for s in per_seed.index)
    for score in SCORES:
        mean, std, ci95 = summarise(per_seed[f"{score}_top1"].dropna().tolist())
        row.update({f"{score}_mean": mean, f"{score}_std": std, f"{score}_ci95": ci95})
    row["graph_kl_mean"], row["graph_kl_std"], _ = summarise(
        per_seed["last_graph_kl"].dropna().tolist()
    )
    mhans = sorted(set(finished["graph_kl_mhan"].dropna()))
    row["graph_kl_mhan"] = ",".join(mhans) or None
    row["last_by_seed"] = {
        int(seed): float(value) for seed, value in per_seed["last_top1"].dropna().items()
    }
    row.update({f"n_{s}": counts[s] for s in UNFINISHED})
    row["duplicated_seeds"] = ",".join(map(str, duplicated))
    row["flags"] = _flags(len(per_seed), expected, counts, duplicated)
    return row


def aggregate(runs: pd.DataFrame, expected_seeds: int = EXPECTED_SEEDS) -> pd.DataFrame:
    """One row per cell of the main runs, in ``cell_columns`` order."""
    if expected_seeds < 1:
        raise ValueError(f"expected_seeds={expected_seeds}: a cell needs at least one seed")
    main = runs[runs["role"] == "main"]
    description = description_columns(runs)
    cells = [
        _cell(group, expected_seeds, description) for _, group in main.groupby("cell_id", sort=True)
    ]
    frame = pd.DataFrame(cells, columns=list(cell_columns(description)))
    return frame.astype({"n_seeds": "int64", "heads": "Int64", "mhan_epochs": "Int64"})
