"""The report's figures: AP bars, AP50-vs-step curves with 95% bands, a forest plot of the
paired differences. Agg canvases without pyplot's global state (safe in workers, headless);
every PNG is written to a temporary name and moved into place."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

CI_LEVEL = 0.95
FOREST = (("AP", "final AP"), ("AP50", "final AP50"), ("auc", "AP50 area under curve"))


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def plot_ap(name: str, baseline: str, summary: pd.DataFrame, done: pd.DataFrame, path: Path) -> None:
    """AP per arm: bars at the seed mean, error bars one standard deviation, dots per seed."""
    fig = _figure(max(5.0, 1.1 * len(summary) + 2), 4.2)
    ax = fig.subplots()
    x = list(range(len(summary)))
    means = (100 * summary["AP_mean"].fillna(0.0)).tolist()
    stds = (100 * summary["AP_std"].fillna(0.0)).tolist()
    colors = ["tab:orange" if a == baseline else "tab:blue" for a in summary["arm"]]
    ax.bar(x, means, yerr=stds, capsize=5, color=colors, alpha=0.8)
    for i, arm in enumerate(summary["arm"]):
        seeds_ap = 100 * done[done["arm"] == arm]["AP"].astype(float) if not done.empty else []
        ax.plot([i] * len(seeds_ap), list(seeds_ap), "k.", markersize=6)
    ax.set_xticks(x, summary["arm"].tolist(), rotation=20, ha="right")
    ax.set(ylabel="final AP (COCO points)", title=f"{name}: AP per arm (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def band(values: pd.Series, level: float = CI_LEVEL) -> tuple[float, float, float]:
    """Mean and two-sided t interval of the mean of `values` (the mean twice when n < 2)."""
    v = values.astype(float).dropna()
    mean = float(v.mean()) if len(v) else math.nan
    if len(v) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return mean, mean - half, mean + half


def plot_convergence(name: str, arms: list[str], baseline: str, hist: pd.DataFrame, path: Path,
                     metric: str = "AP50") -> None:
    """`metric` against optimiser step (`hist`: arm, step, metric): per arm the mean over seeds
    at each mark, shaded 95% t interval of that mean."""
    fig = _figure(7.5, 4.5)
    ax = fig.subplots()
    if hist.empty or metric not in hist:
        ax.text(0.5, 0.5, "no evaluations recorded yet", ha="center", va="center", transform=ax.transAxes)
    else:
        for arm in arms:
            h = hist[hist["arm"] == arm]
            if h.empty:
                continue
            rows = [(step, *band(g[metric])) for step, g in h.groupby("step")]
            curve = pd.DataFrame(rows, columns=["step", "mean", "low", "high"]).sort_values("step")
            line = ax.plot(curve["step"], 100 * curve["mean"], "o-", markersize=3, label=arm,
                           linewidth=2.2 if arm == baseline else 1.4)[0]
            ax.fill_between(curve["step"], 100 * curve["low"], 100 * curve["high"], color=line.get_color(),
                            alpha=0.15)
        ax.legend(loc="lower right", fontsize="small")
    ax.set(xlabel="step", ylabel=f"{metric} (COCO points)",
           title=f"{name}: {metric} vs step (mean over seeds, band = 95% CI)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_forest(name: str, baseline: str, summary: pd.DataFrame, path: Path) -> None:
    """Paired differences vs the baseline with 95% CIs: one row per (arm, quantity)."""
    rows = [(f"{r['arm']}: {label}", r[f"d{key}"], r[f"d{key}_low"], r[f"d{key}_high"])
            for _, r in summary.iterrows() if r["arm"] != baseline for key, label in FOREST
            if f"d{key}" in r and not pd.isna(r[f"d{key}"])]
    fig = _figure(7.5, max(2.5, 0.32 * len(rows) + 1.5))
    ax = fig.subplots()
    if not rows:
        ax.text(0.5, 0.5, "no paired differences yet", ha="center", va="center", transform=ax.transAxes)
    for i, (_, mean, low, high) in enumerate(rows):
        y = len(rows) - 1 - i
        if not pd.isna(low):
            ax.plot([100 * low, 100 * high], [y, y], "-", color="tab:blue", linewidth=2)
        ax.plot([100 * mean], [y], "o", color="tab:orange" if pd.isna(low) or low <= 0 <= high else "tab:red")
    ax.axvline(0.0, color="k", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)], fontsize="small")
    ax.set(xlabel=f"arm − {baseline} (COCO points, paired by seed, 95% CI)",
           title=f"{name}: paired differences (red: CI excludes 0)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
