"""Paired comparisons: each cell against a baseline cell, seed by seed.

Runs of two cells that share a seed share everything the seed draws outside the method: the
student's initialisation, the order of the batches and, with ``dataset.subset``, the training
images. Their difference is a paired measurement, and the per-seed differences d_s = x_s - b_s
answer "does this cell differ from the baseline?" far more sharply than two independent means:
mean(d), its sample sd, the paired t statistic mean(d) / (sd / sqrt(n)), its two-sided p value
(Student t, n - 1 degrees of freedom) and the 95% interval of the mean difference. Only seeds
that finished in both cells are paired.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05
PAIRED_COLUMNS: tuple[str, ...] = (
    "baseline_cell",
    "pair_n",
    "diff_mean",
    "diff_sd",
    "diff_t",
    "diff_p",
    "diff_ci_low",
    "diff_ci_high",
    "significant",
)


@dataclass(frozen=True)
class Paired:
    """Per-seed differences of a cell from its baseline (nan where n is too small)."""

    n: int
    mean: float
    sd: float
    t: float
    p: float
    ci_low: float
    ci_high: float

    @property
    def significant(self) -> bool:
        """The 95% interval excludes 0 (equivalently p < 0.05)."""
        return not math.isnan(self.p) and self.p < ALPHA


def paired_difference(values: Mapping[int, float], baseline: Mapping[int, float]) -> Paired:
    """Compare ``values`` with ``baseline`` (both {seed: score}) on the seeds they share."""
    seeds = sorted(set(values) & set(baseline))
    diffs = [values[s] - baseline[s] for s in seeds]
    n = len(diffs)
    if n == 0:
        return Paired(0, *(math.nan,) * 6)
    mean = sum(diffs) / n
    if n == 1:
        return Paired(1, mean, *(math.nan,) * 5)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0.0:  # identical differences: no spread to test against
        return Paired(n, mean, 0.0, math.nan, math.nan, mean, mean)
    test = stats.ttest_rel([values[s] for s in seeds], [baseline[s] for s in seeds])
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
    return Paired(n, mean, sd, float(test.statistic), float(test.pvalue), mean - half, mean + half)


def paired_row(values: Mapping[int, float], baseline: Mapping[int, float], cell: str) -> dict:
    """The PAIRED_COLUMNS of one table entry against the baseline cell ``cell``."""
    result = paired_difference(values, baseline)
    return {
        "baseline_cell": cell,
        "pair_n": result.n,
        "diff_mean": result.mean,
        "diff_sd": result.sd,
        "diff_t": result.t,
        "diff_p": result.p,
        "diff_ci_low": result.ci_low,
        "diff_ci_high": result.ci_high,
        "significant": result.significant,
    }
