"""A training run's folder: `<out>/train/<name>/` with config.yaml, metrics.csv, curves.png,
results.png, the diagnostics of the best evaluation, best.pt and last.pt. Naming and finding a
run to resume; the per-evaluation files are written by dinokit.training.plots.
"""

from __future__ import annotations

import re
from pathlib import Path

from dinokit.errors import CheckpointError

RUN_FILES = ("config.yaml", "metrics.csv", "curves.png", "results.png", "best.pt", "last.pt")


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


def safe_name(text: str) -> str:
    """A run name usable as a folder name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned or "exp"
