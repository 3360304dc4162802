"""Statistics of an ablation: convergence per trial, paired differences, seeds needed.

Kept apart from the report so each number can be checked against a hand computation.
Convergence numbers come from the AP50-vs-step curve that every trial records at the same
step marks; differences are always paired by seed (arm − baseline of the same seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import integrate, stats

CI_LEVEL = 0.95
POWER, ALPHA = 0.8, 0.05
MAX_SEEDS = 1000  # the power search stops here ("more than 1000")
THRESHOLDS = (0.3, 0.5)  # AP50 levels whose first-reaching step is reported
TAIL = 1 / 3  # the decision measure "<metric>_tail" averages this last fraction of the marks
TAILS = ("AP_tail", "AP50_tail")


def curve_auc(steps: np.ndarray, values: np.ndarray) -> float:
    """Area under a metric-vs-step curve over the recorded marks, divided by the span of steps:
    the curve's mean height (trapezoid rule), in the metric's units. One mark: its value."""
    order = np.argsort(steps)
    x, y = np.asarray(steps, dtype=float)[order], np.asarray(values, dtype=float)[order]
    if len(x) == 0:
        return math.nan
    if len(x) == 1 or x[-1] == x[0]:
        return float(y[-1])
    return float(integrate.trapezoid(y, x) / (x[-1] - x[0]))  # not np.trapezoid: NumPy >= 2.0 only


def first_step_reaching(steps: np.ndarray, values: np.ndarray, level: float) -> float:
    """The first recorded step whose value is at least `level`; NaN when never reached."""
    order = np.argsort(steps)
    x, y = np.asarray(steps, dtype=float)[order], np.asarray(values, dtype=float)[order]
    hit = np.nonzero(y >= level)[0]
    return float(x[hit[0]]) if len(hit) else math.nan


def tail_mean(steps: np.ndarray, values: np.ndarray, fraction: float = TAIL) -> float:
    """Mean of the last `fraction` of the marks (at least one): a final number that averages
    out the mark-to-mark wobble of the last evaluations. NaN without marks."""
    order = np.argsort(steps)
    y = np.asarray(values, dtype=float)[order]
    if len(y) == 0:
        return math.nan
    k = max(1, math.ceil(fraction * len(y)))
    return float(y[-k:].mean())


def curve_stats(history: pd.DataFrame, metric: str = "AP50") -> pd.DataFrame:
    """Per trial (rows of `history`: trial, step, metric): AUC, first step reaching each
    threshold and the mean of AP and AP50 over the last third of the marks. Columns: trial, auc,
    steps_to_30, steps_to_50 (for the default thresholds), AP_tail, AP50_tail."""
    cols = ["trial", "auc", *(threshold_column(t) for t in THRESHOLDS), *TAILS]
    if history.empty or metric not in history:
        return pd.DataFrame(columns=cols)
    rows = []
    for trial, h in history.dropna(subset=[metric]).groupby("trial"):
        x, y = h["step"].to_numpy(dtype=float), h[metric].to_numpy(dtype=float)
        rows.append({"trial": trial, "auc": curve_auc(x, y),
                     **{threshold_column(t): first_step_reaching(x, y, t) for t in THRESHOLDS},
                     **{f"{m}_tail": tail_mean(x, h[m].to_numpy(dtype=float)) if m in h else math.nan
                        for m in ("AP", "AP50")}})
    return pd.DataFrame(rows, columns=cols)


def threshold_column(level: float) -> str:
    return f"steps_to_{round(100 * level)}"


@dataclass(frozen=True)
class PairedDiff:
    """Mean of per-seed differences (arm − baseline), its two-sided t interval, the sample sd
    of the differences and the number of pairs."""

    mean: float
    low: float
    high: float
    n: int
    sd: float = math.nan

    @property
    def resolved(self) -> bool:
        """The interval excludes 0."""
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)


def paired_difference(arm: pd.Series, base: pd.Series, level: float = CI_LEVEL) -> PairedDiff:
    """Paired t interval over the seeds both series have a value for (index = seed).

    Pairing by seed removes the variance both arms share through the seed (data order,
    augmentation, initial weights), which is why a few seeds can still resolve an effect.
    """
    common = arm.index.intersection(base.index)
    d = (arm.loc[common] - base.loc[common]).astype(float).dropna()
    n = len(d)
    if n == 0:
        return PairedDiff(math.nan, math.nan, math.nan, 0)
    mean = float(d.mean())
    if n < 2:
        return PairedDiff(mean, math.nan, math.nan, n)
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return PairedDiff(mean, mean - half, mean + half, n, sd)


def paired_t_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of a two-sided paired t test with `n` pairs for a standardised effect
    (mean difference / sd of differences): noncentral t with n − 1 degrees of freedom."""
    if n < 2:
        return 0.0
    df, nc = n - 1, abs(effect) * math.sqrt(n)
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(mean: float, sd: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """Smallest number of paired seeds whose paired t test (two-sided, `alpha`) detects a true
    difference `mean` with probability `power`, if the differences keep the spread `sd`.
    NaN when unknown (fewer than 2 pairs), inf when `mean` is 0 or over MAX_SEEDS are needed."""
    if math.isnan(mean) or math.isnan(sd):
        return math.nan
    if mean == 0:
        return math.inf
    if sd == 0:
        return 2.0
    effect = abs(mean) / sd
    for n in range(2, MAX_SEEDS + 1):
        if paired_t_power(effect, n, alpha) >= power:
            return float(n)
    return math.inf
