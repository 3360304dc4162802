"""COCO metrics as rich tables and one-line summaries (eval output, training progress)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from dinokit.infer.evaluator import METRIC_NAMES, is_defined


def percent(value: Any) -> str:
    """A metric in [0, 1] as a percentage with one decimal; "n/a" where COCO leaves it undefined."""
    return f"{100 * float(value):.1f}" if is_defined(value) else "n/a"


def metrics_table(metrics: dict[str, Any], title: str = "COCO bbox") -> Table:
    table = Table(title=title)
    for name in METRIC_NAMES:
        table.add_column(name, justify="right")
    table.add_row(*(percent(metrics.get(name, 0.0)) for name in METRIC_NAMES))
    return table


def per_class_table(metrics: dict[str, Any]) -> Table:
    """AP per class and, at the F1-optimal score threshold, P / R / F1 per class and macro."""
    prf = metrics.get("per_class_prf", {})
    threshold = metrics.get("score_threshold")
    table = Table(title="AP per class" + (f"; P, R, F1 at score >= {threshold:.4g} (IoU 0.5)" if is_defined(threshold) else ""))
    table.add_column("class")
    for name in ("AP", "P", "R", "F1") if prf else ("AP",):
        table.add_column(name, justify="right")
    for name, ap in metrics.get("per_class", {}).items():
        row = prf.get(name, {})
        table.add_row(str(name), percent(ap), *((percent(row.get(k, 0.0)) for k in ("P", "R", "F1")) if prf else ()))
    if prf:
        table.add_row("all (macro)", percent(metrics.get("AP", 0.0)), *(percent(metrics.get(k, 0.0)) for k in ("P", "R", "F1")))
    return table


def metrics_line(metrics: dict[str, Any]) -> str:
    return " ".join(f"{name} {percent(metrics.get(name, 0.0))}" for name in METRIC_NAMES)
