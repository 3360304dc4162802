"""The run folder's per-evaluation files: metrics.csv, curves.png (total loss and AP at a glance)
and results.png (every loss term and every metric against the step, one panel each), written
through dinokit.files after each evaluation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dinokit.files import write_text, write_with

NOT_PLOTTED = ("step", "epoch", "elapsed", "train_seconds", "dn_draw", "stopped")  # bookkeeping columns
PANEL_COLUMNS = 5


def write_metrics_csv(history: list[dict[str, Any]], path: Path) -> Path:
    """One row per evaluation (nested values such as per-class tables left out)."""
    import pandas as pd

    rows = [{k: v for k, v in row.items() if not isinstance(v, (dict, list))} for row in history]
    return write_text(path, pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"))


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    return write_with(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_curves(history: list[dict[str, Any]], loss_curve: list[list[float]], path: Path) -> Path:
    """Training loss (left) and AP / AP50 (right) against the optimiser step."""
    fig = _figure(10, 4)
    ax_loss, ax_ap = fig.subplots(1, 2)
    points = loss_curve or [[row["step"], row["loss"]] for row in history if "loss" in row]
    if points:
        ax_loss.plot([p[0] for p in points], [p[1] for p in points], color="tab:blue")
    ax_loss.set(title="training loss", xlabel="step", ylabel="loss")
    for key, style in (("AP", "o-"), ("AP50", "s--")):
        ax_ap.plot([row["step"] for row in history], [row.get(key, 0.0) for row in history], style, label=key)
    ax_ap.set(title="validation", xlabel="step", ylabel="COCO metric", ylim=(0, 1))
    ax_ap.legend(loc="lower right")
    for ax in (ax_loss, ax_ap):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def result_series(history: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """{column: (steps, values)} of every numeric history column worth a panel, losses first (in
    column order), then the metrics; undefined values (NaN, e.g. APs without small objects) left out,
    and a column without any defined value."""
    names: list[str] = []
    for row in history:
        names += [k for k, v in row.items() if k not in names and k not in NOT_PLOTTED
                  and isinstance(v, (int, float)) and not isinstance(v, bool)]
    names.sort(key=lambda k: (not k.startswith("loss"), k != "loss"))  # stable: file order within groups
    series = {}
    for name in names:
        points = [(float(r["step"]), float(r[name])) for r in history
                  if isinstance(r.get(name), (int, float)) and math.isfinite(float(r[name]))]
        if points:  # a metric never defined (APs without small objects) gets no empty panel
            series[name] = ([p[0] for p in points], [p[1] for p in points])
    return series


def plot_results(history: list[dict[str, Any]], path: Path) -> Path:
    """results.png: one panel per loss term and per metric (AP, AR100, P, R, F1, the score
    threshold, lr), each against the optimiser step, one point per evaluation."""
    series = result_series(history)
    cols = min(PANEL_COLUMNS, max(1, len(series)))
    rows = max(1, math.ceil(len(series) / cols))
    fig = _figure(3.2 * cols, 2.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, (steps, values)) in zip(axes, series.items()):
        ax.plot(steps, values, "o-", markersize=3, color="tab:orange" if name.startswith("loss") else "tab:blue")
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("step", fontsize="small")
        ax.tick_params(labelsize="small")
        ax.grid(alpha=0.3)
    for ax in axes[len(series):]:
        ax.set_visible(False)
    return _save(fig, path)
