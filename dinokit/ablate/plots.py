"""The report's figures: AP bars, AP50-vs-step curves with 95% bands, a forest plot of the
paired differences, the per-class heatmap; one colour per arm in all of them. Agg canvases
without pyplot's global state (safe in workers, headless); every PNG goes through files.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from dinokit.files import write_with

CI_LEVEL = 0.95
FOREST = (("AP", "final AP"), ("AP50", "final AP50"), ("auc", "AP50 area under curve"))


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: Path) -> None:
    write_with(path, lambda tmp: fig.savefig(tmp, format="png"))


ARM_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
              "#bcbd22", "#17becf")  # matplotlib's tab10: arm i of a study gets ARM_COLORS[i % 10]
MIN_SEEDS_FOR_BAND = 3  # with fewer seeds the curves show each seed instead of a t band


def arm_colors(arms: list[str]) -> dict[str, str]:
    """One colour per arm, by the arm's position in the study: the same in every plot."""
    return {a: ARM_COLORS[i % len(ARM_COLORS)] for i, a in enumerate(arms)}


def clip_points(values: Any, low: float = 0.0, high: float = 100.0) -> Any:
    """Bands and intervals in COCO points cannot leave the metric's range."""
    return values.clip(low, high) if hasattr(values, "clip") else min(max(values, low), high)


def plot_ap(name: str, baseline: str, summary: pd.DataFrame, done: pd.DataFrame, path: Path) -> None:
    """AP per arm: bars at the seed mean, error bars one standard deviation (clipped to 0-100),
    dots per seed; each arm in its own colour (`arm_colors` of the summary's arm order)."""
    fig = _figure(max(5.0, 1.1 * len(summary) + 2), 4.2)
    ax = fig.subplots()
    x = list(range(len(summary)))
    means = (100 * summary["AP_mean"].fillna(0.0))
    stds = (100 * summary["AP_std"].fillna(0.0))
    below, above = means - clip_points(means - stds), clip_points(means + stds) - means
    colour = arm_colors(summary["arm"].tolist())
    ax.bar(x, means.tolist(), yerr=[below.tolist(), above.tolist()], capsize=5,
           color=[colour[a] for a in summary["arm"]], alpha=0.8,
           edgecolor=["black" if a == baseline else "none" for a in summary["arm"]])
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
    """`metric` against optimiser step (`hist`: arm, seed, step, metric): per arm the mean over
    seeds at each mark, shaded 95% t interval of that mean clipped to 0-100; an arm with fewer
    than MIN_SEEDS_FOR_BAND seeds shows each seed's own curve (thin) instead of a band."""
    fig = _figure(7.5, 4.5)
    ax = fig.subplots()
    colour = arm_colors(arms)
    if hist.empty or metric not in hist:
        ax.text(0.5, 0.5, "no evaluations recorded yet", ha="center", va="center", transform=ax.transAxes)
    else:
        for arm in arms:
            h = hist[hist["arm"] == arm]
            if h.empty:
                continue
            rows = [(step, *band(g[metric])) for step, g in h.groupby("step")]
            curve = pd.DataFrame(rows, columns=["step", "mean", "low", "high"]).sort_values("step")
            seeds = h["seed"].nunique() if "seed" in h else 0
            ax.plot(curve["step"], 100 * curve["mean"], "o-", markersize=3, color=colour[arm],
                    label=f"{arm} ({seeds} seed{'s' if seeds != 1 else ''})", linewidth=2.2 if arm == baseline else 1.4)
            if seeds >= MIN_SEEDS_FOR_BAND:
                ax.fill_between(curve["step"], clip_points(100 * curve["low"]), clip_points(100 * curve["high"]),
                                color=colour[arm], alpha=0.15)
            else:
                for _, g in h.groupby("seed"):
                    g = g.sort_values("step")
                    ax.plot(g["step"], 100 * g[metric], "-", color=colour[arm], linewidth=0.8, alpha=0.5)
        ax.legend(loc="lower right", fontsize="small")
    ax.set(xlabel="step", ylabel=f"{metric} (COCO points)",
           title=f"{name}: {metric} vs step\n(mean over seeds; band = 95% CI; "
                 f"thin lines = single seeds below {MIN_SEEDS_FOR_BAND} seeds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_forest(name: str, baseline: str, summary: pd.DataFrame, path: Path, descriptive: bool = False) -> None:
    """Paired differences vs the baseline with 95% paired-t CIs: one row per (arm, quantity).
    `descriptive`: the study has verdicts (its rule's), so the intervals are drawn without any
    mark of significance and the title says they are not the verdicts."""
    colour = arm_colors(summary["arm"].tolist())
    rows = [(f"{r['arm']}: {label}", r[f"d{key}"], r[f"d{key}_low"], r[f"d{key}_high"], colour[r["arm"]])
            for _, r in summary.iterrows() if r["arm"] != baseline for key, label in FOREST
            if f"d{key}" in r and not pd.isna(r[f"d{key}"])]
    fig = _figure(7.5, max(2.5, 0.32 * len(rows) + 1.5))
    ax = fig.subplots()
    if not rows:
        ax.text(0.5, 0.5, "no paired differences yet", ha="center", va="center", transform=ax.transAxes)
    for i, (_, mean, low, high, c) in enumerate(rows):
        y = len(rows) - 1 - i
        if not pd.isna(low):  # a difference of points lies in [-100, 100]
            ax.plot([clip_points(100 * low, -100), clip_points(100 * high, -100)], [y, y], "-", color=c, linewidth=2)
        resolved = descriptive or (not pd.isna(low) and not low <= 0 <= high)
        ax.plot([100 * mean], [y], "o", color=c, markerfacecolor=c if resolved else "white", markersize=7)
    ax.axvline(0.0, color="k", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)], fontsize="small")
    ax.set(xlabel=f"arm − {baseline} (COCO points, paired by seed, 95% paired-t CI)",
           title=f"{name}\npaired differences, " + ("descriptive intervals\n(fixed-design, not the verdicts: "
                                                    "see the report's Verdicts)" if descriptive else
                                                     "fixed seeds (filled dot: CI excludes 0)"))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_heatmap(name: str, diffs: pd.DataFrame, path: Path) -> None:
    """Rows = classes and sizes, columns = comparisons (`diffs`: key, comparison, mean in AP
    fractions); colour = mean paired difference in COCO points (red: lower, blue: higher), grey
    'n/a' where undefined. Exploratory (ablate/breakdown.py): no cell is marked significant."""
    import numpy as np
    from matplotlib.patches import Rectangle

    keys = list(dict.fromkeys(diffs["key"])) if len(diffs) else []
    cols = list(dict.fromkeys(diffs["comparison"])) if len(diffs) else []
    fig = _figure(max(5.0, 1.6 * len(cols) + 3), max(3.0, 0.45 * len(keys) + 2))
    ax = fig.subplots()
    if not keys:
        ax.text(0.5, 0.5, "no per-class numbers yet", ha="center", va="center", transform=ax.transAxes)
        save_figure(fig, path)
        return
    cell = diffs.set_index(["key", "comparison"])
    grid = np.full((len(keys), len(cols)), np.nan)
    for i, k in enumerate(keys):
        for j, c in enumerate(cols):
            if (k, c) in cell.index:
                grid[i, j] = 100 * float(cell.loc[(k, c), "mean"])
    limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for i, k in enumerate(keys):
        for j, c in enumerate(cols):
            if np.isnan(grid[i, j]):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color="#dddddd"))
                ax.text(j, i, "n/a", ha="center", va="center", fontsize="small", color="#555555")
                continue
            ax.text(j, i, f"{round(grid[i, j], 1) + 0.0:+.1f}", ha="center", va="center", fontsize="small")
    ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right", fontsize="small")
    ax.set_yticks(range(len(keys)), keys, fontsize="small")
    fig.colorbar(image, ax=ax, label="mean paired Δ AP (COCO points)")
    ax.set(title=f"{name}: what changed per class and size\n(exploratory mean paired differences, not verdicts)")
    fig.tight_layout()
    save_figure(fig, path)
