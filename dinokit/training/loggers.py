"""The one logger interface the trainer talks to: TensorBoard (training/board.py) and MLflow
(training/mlflow_log.py) behind it, each optional, fed the same calls.

The trainer calls `step` with each step's loss terms, `evaluation` with each evaluation's
metrics and `close` once with how the run ended; it never knows which loggers are on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from dinokit.config import Config, ConfigError

# how a run ended, as `close` is told: the budget or patience ended it, Ctrl-C / SIGTERM saved
# last.pt to resume, the caller stopped it (a pruned trial), or an error ended it
ENDINGS = ("finished", "interrupted", "stopped", "failed")


class RunLogger(Protocol):
    """What a logger of training runs does."""

    def step(self, step: int, losses: dict[str, float], lr: float) -> None:
        """One optimiser step's loss terms and learning rate."""

    def evaluation(self, step: int, metrics: dict[str, Any]) -> None:
        """One evaluation's metrics (AP, AP50, ..., per_class {name: AP})."""

    def close(self, ending: str = "finished") -> None:
        """The run is over (`ending` is one of ENDINGS); flush and release."""


class Loggers:
    """Several loggers as one: each call goes to every logger, in order."""

    def __init__(self, loggers: list[RunLogger]) -> None:
        self.loggers = loggers

    def step(self, step: int, losses: dict[str, float], lr: float) -> None:
        for logger in self.loggers:
            logger.step(step, losses, lr)

    def evaluation(self, step: int, metrics: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.evaluation(step, metrics)

    def close(self, ending: str = "finished") -> None:
        for logger in self.loggers:
            logger.close(ending)


def open_loggers(run_dir: Path, cfg: Config, say: Callable[[str], None]) -> Loggers | None:
    """The loggers `cfg.train` switches on for the run in `run_dir` (None: none is on).

    TensorBoard is on by default where it is installed; MLflow when `train.mlflow` is set, and
    then a missing package or an unreachable store is an error before the first step."""
    from dinokit.training.board import open_board

    loggers: list[RunLogger] = []
    board = open_board(run_dir, cfg.train.tensorboard)
    if board is not None:
        loggers.append(board)
    if cfg.train.mlflow:
        from dinokit.training.mlflow_log import MlflowLogger

        loggers.append(MlflowLogger.open(run_dir, cfg, say))
    return Loggers(loggers) if loggers else None


LOGGERS = ("tensorboard", "mlflow")


def logger_fields(names: list[str], mlflow_uri: str | None = None) -> dict[str, Any]:
    """The train-section fields that `--logger NAME ...` and `--mlflow-uri` set (None: unchanged):
    each named logger is switched on; a tracking URI implies MLflow."""
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ConfigError(f"--logger must be {' or '.join(LOGGERS)}, got '{unknown[0]}'")
    mlflow = "mlflow" in names or bool(mlflow_uri)
    return {"tensorboard": True if "tensorboard" in names else None, "mlflow": True if mlflow else None,
            "mlflow_uri": mlflow_uri or None}
