"""Early stopping: `train.patience` evaluations in a row without a better AP end the run."""

from __future__ import annotations

from typing import Any


def patience_reason(history: list[dict[str, Any]], best: dict[str, Any], patience: int) -> str:
    """Why training stops early, or "" to go on. Counted from the history (the evaluations after
    the best one), so a resumed run counts the evaluations of its earlier sessions too."""
    since = sum(1 for row in history if row["step"] > best.get("step", 0))
    if patience <= 0 or not best or since < patience:
        return ""
    return (f"patience: no better AP in {since} evaluations (best AP {100 * best['AP']:.1f} "
            f"at step {best['step']}; best.pt kept)")
