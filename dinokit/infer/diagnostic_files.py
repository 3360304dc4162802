"""The diagnostic files of one evaluation: pr_curve.png, f1_curve.png, confusion_matrix.png and
.csv (counts; row-normalised in confusion_matrix_normalised.csv) and per_class.csv, written
through dinokit.files. `dinokit eval` writes them into its output folder, training into the run
folder at each new best evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dinokit.files import write_text, write_with
from dinokit.infer.diagnostics import IOU, Diagnostics, normalise_rows

MAX_LEGEND = 12  # classes named in a legend; more are drawn thin and grey, without a name


def write_diagnostics(diag: Diagnostics, folder: str | Path, per_class_ap: dict[str, float] | None = None) -> list[Path]:
    """Write every diagnostic file of `diag` into `folder`; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        _save(_pr_figure(diag), folder / "pr_curve.png"),
        _save(_f1_figure(diag), folder / "f1_curve.png"),
        _save(_confusion_figure(diag), folder / "confusion_matrix.png"),
        write_text(folder / "confusion_matrix.csv", matrix_csv(diag.labels, diag.confusion)),
        write_text(folder / "confusion_matrix_normalised.csv",
                   matrix_csv(diag.labels, normalise_rows(diag.confusion))),
        write_text(folder / "per_class.csv", per_class_csv(diag, per_class_ap or {})),
    ]
    return written


def matrix_csv(labels: list[str], matrix: np.ndarray) -> str:
    """Rows: true class (then background); columns: predicted class (then background)."""
    import pandas as pd

    frame = pd.DataFrame(matrix, index=pd.Index(labels, name="true \\ predicted"), columns=labels)
    return frame.to_csv(float_format="%.6g")


def per_class_csv(diag: Diagnostics, per_class_ap: dict[str, float]) -> str:
    """One row per class with ground truth: AP, and P / R / F1 at the F1-optimal threshold."""
    import pandas as pd

    threshold = diag.metrics["score_threshold"]
    rows = [{"class": name, "AP": per_class_ap.get(name, float("nan")), **prf, "score_threshold": threshold}
            for name, prf in diag.metrics["per_class_prf"].items()]
    columns = ["class", "AP", "P", "R", "F1", "score_threshold"]
    return pd.DataFrame(rows, columns=columns).to_csv(index=False, float_format="%.6g")


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    return write_with(path, lambda tmp: fig.savefig(tmp, format="png"))


def _class_lines(ax: Any, x: np.ndarray, curves: dict[str, np.ndarray], values: dict[str, float], fmt: str,
                 mean_label: str) -> None:
    """One line per class (named in the legend when there are few) and the bold mean over classes."""
    few = len(curves) <= MAX_LEGEND
    for name, y in curves.items():
        if few:
            ax.plot(x, y, linewidth=1, label=f"{name} {fmt.format(values[name])}")
        else:
            ax.plot(x, y, linewidth=0.6, color="grey", alpha=0.5)
    if len(curves) > 1:
        mean = np.mean(np.stack(list(curves.values())), axis=0)
        ax.plot(x, mean, linewidth=3, color="tab:blue" if not few else "black", label=mean_label)
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower left", fontsize="small")


def _pr_figure(diag: Diagnostics) -> Any:
    """Precision against recall per class at IoU 0.5 (COCO's interpolated curve; its area is AP50)."""
    fig, ax = _figure(6, 5)
    ap50 = {name: float(np.mean(p)) for name, p in diag.pr.items()}
    _class_lines(ax, diag.recall_grid, diag.pr, ap50, "AP50 {:.3f}",
                 f"all classes AP50 {np.mean(list(ap50.values())) if ap50 else 0.0:.3f}")
    ax.set(title=f"precision-recall at IoU {IOU:g}", xlabel="recall", ylabel="precision")
    return fig


def _f1_figure(diag: Diagnostics) -> Any:
    """F1 against the score threshold per class, with the F1-optimal threshold marked."""
    fig, ax = _figure(6, 5)
    c = diag.curves
    curves = {name: c.f1[k] for k, name in enumerate(c.class_names)}
    best = {name: float(row.max()) for name, row in curves.items()}
    _class_lines(ax, c.thresholds, curves, best, "max {:.3f}", f"all classes max {c.macro_f1.max():.3f}")
    threshold, f1 = diag.metrics["score_threshold"], diag.metrics["F1"]
    if threshold == threshold:  # not NaN
        ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=1)
        ax.annotate(f"F1 {f1:.3f} at score {threshold:.4g}", (threshold, f1), xytext=(5, 8),
                    textcoords="offset points", color="tab:red")
    ax.set(title=f"F1 against score threshold (IoU {IOU:g})", xlabel="score threshold", ylabel="F1")
    return fig


def _confusion_figure(diag: Diagnostics) -> Any:
    """Counts (left) and row-normalised (right); rows the true class, columns the predicted one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(diag.labels)
    side = min(24.0, max(4.0, 0.45 * n + 2.5))
    fig = Figure(figsize=(2 * side + 1, side), dpi=100)
    FigureCanvasAgg(fig)
    normalised = normalise_rows(diag.confusion)
    threshold = diag.metrics["score_threshold"]
    for ax, values, title, fmt in zip(
        fig.subplots(1, 2), (diag.confusion, normalised), ("counts", "row-normalised"), ("{:d}", "{:.2f}")
    ):
        shown = values / max(1, values.max()) if values is diag.confusion else values
        image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
        if n <= 30:  # numbers in the cells while they fit
            for i in range(n):
                for j in range(n):
                    if values[i, j]:
                        v = int(values[i, j]) if fmt == "{:d}" else float(values[i, j])
                        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize="small",
                                color="white" if shown[i, j] > 0.6 else "black")
        ax.set_xticks(range(n), diag.labels, rotation=90 if n > 6 else 0)
        ax.set_yticks(range(n), diag.labels)
        ax.set(xlabel="predicted", ylabel="true", title=f"{title} (score >= {threshold:.4g}, IoU {IOU:g})")
        if values is not diag.confusion:
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig
