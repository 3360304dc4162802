"""TensorBoard logs of a training run (optional extra `[tensorboard]`): every loss term and the
lr at each step, each evaluation's metrics, under `<run>/tensorboard/`. One of the loggers behind
training/loggers.py's interface."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class Board:
    """A SummaryWriter with the trainer's vocabulary; `open_board` gives None when it is off."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def step(self, step: int, losses: dict[str, float], lr: float) -> None:
        for name, value in losses.items():
            if math.isfinite(value):
                self.writer.add_scalar(f"train/{name}", value, step)
        self.writer.add_scalar("train/lr", lr, step)

    def evaluation(self, step: int, metrics: dict[str, Any]) -> None:
        for name, value in metrics.items():
            if name == "per_class":
                for cls, ap in value.items():
                    self.writer.add_scalar(f"AP_per_class/{cls}", float(ap), step)
            elif isinstance(value, (int, float)) and math.isfinite(value):  # undefined (NaN) metrics: no point
                self.writer.add_scalar(f"val/{name}", float(value), step)
        self.writer.flush()

    def close(self, ending: str = "finished") -> None:
        self.writer.close()


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def open_board(run_dir: Path, enabled: bool) -> Board | None:
    """A Board writing to `run_dir/tensorboard` when enabled and tensorboard is installed, else None."""
    if not enabled or not tensorboard_available():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return Board(SummaryWriter(log_dir=str(run_dir / "tensorboard")))
