"""Cell formatting for the ablation tables: COCO points, mean ± sd, signed paired differences
with their 95% interval, seeds a paired t test needs. Shared by the per-arm, convergence and
step tables (markdown, HTML and the terminal show the same strings)."""

from __future__ import annotations

import math

import pandas as pd

MIN_SEEDS_FOR_CI = 3  # below this a paired t interval has one degree of freedom or none


def mean_std(mean: float, std: float, scale: float = 100.0, digits: int = 1) -> str:
    if pd.isna(mean):
        return "—"
    text = f"{scale * mean:.{digits}f}"
    return text if pd.isna(std) else f"{text} ± {scale * std:.{digits}f}"


def signed(x: float, scale: float = 100.0, digits: int = 1) -> str:
    value = round(scale * x, digits) + 0.0  # + 0.0: no "−0.0"
    return f"{value:+.{digits}f}".replace("-", "−")


def delta_cell(row: pd.Series, baseline: str, col: str = "AP", scale: float = 100.0, digits: int = 1) -> str:
    """`mean [low, high]` of the paired difference; a dagger when too few pairs for a real CI."""
    if row["arm"] == baseline:
        return "(baseline)"
    mean, low, high, n = row[f"d{col}"], row[f"d{col}_low"], row[f"d{col}_high"], row[f"d{col}_n"]
    if pd.isna(mean):
        return "—"
    if pd.isna(low):
        return f"{signed(mean, scale, digits)} (1 pair)"
    text = f"{signed(mean, scale, digits)} [{signed(low, scale, digits)}, {signed(high, scale, digits)}]"
    return text + (" †" if n < MIN_SEEDS_FOR_CI else "")


def seeds_cell(row: pd.Series, baseline: str, col: str = "AP") -> str:
    """Seeds a paired t test needs for this difference (80% power, 5% two-sided)."""
    n = row[f"d{col}_seeds"]
    if row["arm"] == baseline or pd.isna(n):
        return "—"
    return "never (Δ = 0)" if math.isinf(n) and row[f"d{col}"] == 0 else (
        "> 1000" if math.isinf(n) else str(int(n)))


def params_cell(x: float) -> str:
    return "—" if pd.isna(x) else f"{x / 1e6:.2f} M"


def reached_cell(row: pd.Series, col: str) -> str:
    """Mean first step reaching a threshold over the seeds that reached it, or "not reached"."""
    k, n = int(row[f"{col}_reached"]), int(row["n"])
    if k == 0:
        return "not reached" if n else "—"
    text = mean_std(row[f"{col}_mean"], row[f"{col}_std"], scale=1.0, digits=0)
    return text if k == n else f"{text} ({k}/{n} seeds; rest not reached)"
