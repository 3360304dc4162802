"""A training run's folder: `<out>/train/<name>/` with config.yaml, metrics.csv, curves.png,
best.pt and last.pt. Naming, finding a run to resume, and writing the per-evaluation files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dinokit.errors import CheckpointError

RUN_FILES = ("config.yaml", "metrics.csv", "curves.png", "best.pt", "last.pt")


def new_run_dir(out: str | Path, name: str, command: str = "train") -> Path:
    """Create a fresh `<out>/<command>/<name>`; an existing name gets a number: exp, exp2, ..."""
    root = Path(out) / command
    root.mkdir(parents=True, exist_ok=True)
    base = name or "exp"
    for i in range(1, 100_000):
        candidate = root / (base if i == 1 else f"{base}{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise CheckpointError(f"too many runs named {base} in {root}")


def find_resume_dir(out: str | Path, name: str) -> Path:
    """The run `--resume` continues: `<out>/train/<safe_name(name)>` (the folder that name trained
    into), or the latest run with a last.pt."""
    root = Path(out) / "train"
    if name:
        run = root / safe_name(name)  # the folder `--name` trained into
        if not (run / "last.pt").is_file():
            raise CheckpointError(f"cannot resume: {run / 'last.pt'} not found")
        return run
    runs = [p.parent for p in root.glob("*/last.pt")]
    if not runs:
        raise CheckpointError(f"cannot resume: no run with a last.pt in {root}")
    return max(runs, key=lambda p: (p / "last.pt").stat().st_mtime)


def write_metrics_csv(history: list[dict[str, Any]], path: Path) -> None:
    """One row per evaluation, written atomically (dinokit.files), like checkpoints."""
    import pandas as pd

    from dinokit.files import write_with

    rows = [{k: v for k, v in row.items() if not isinstance(v, (dict, list))} for row in history]
    frame = pd.DataFrame(rows)
    write_with(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def plot_curves(history: list[dict[str, Any]], loss_curve: list[list[float]], path: Path) -> None:
    """Training loss (left) and AP / AP50 (right) against the optimiser step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
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
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)


def safe_name(text: str) -> str:
    """A run name usable as a folder name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned or "exp"
