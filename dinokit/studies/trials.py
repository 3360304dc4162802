"""What every trial of a study starts from: the base configuration (preset + data + `--set` +
the per-trial budget + the evaluation marks), the trainer that trains it, and the plain history
rows a trial keeps in storage."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Optional

from dinokit.config import Config, apply_overrides, budget_flags, check_budget, load_preset
from dinokit.errors import DinokitError

DEFAULT_TRAINER = "dinokit.training.trainer:train"
EVALS_PER_TRIAL = 10  # default number of evaluations per trial (--eval-every)
TIME_BUDGET_MARK = 100  # default --eval-every under a time or epoch budget (step count unknown here)
Trainer = Callable[..., Any]  # like dinokit.training.trainer.train(cfg, progress=, on_epoch=, ...)


def study_config(preset: str, data: Optional[str], sets: list[str], steps: Optional[int],
                 time_budget: Optional[float], eval_every: Optional[int] = None) -> Config:
    """The config every trial starts from, with the per-trial budget; a zero budget is an error.

    Every trial is evaluated at the same step marks: `eval_every` steps, or about
    `EVALS_PER_TRIAL` evaluations per trial, so curves of different trials line up."""
    cfg = load_preset(preset)
    if data is not None:
        if data != "shapes" and not Path(data).exists():
            raise DinokitError(f"--data {data}: no such file or folder (or use 'shapes')")
        cfg.data.data = data
    apply_overrides(cfg, list(sets))
    for key, value in budget_flags(steps=steps, time_budget=time_budget).items():
        setattr(cfg.train, key, value)
    check_budget(cfg.train)
    if eval_every is not None and eval_every <= 0:
        raise DinokitError(f"--eval-every must be a positive number of steps, got {eval_every}")
    if eval_every is not None:
        cfg.train.eval_every_steps = eval_every
    elif cfg.train.eval_every_steps <= 0:
        cfg.train.eval_every_steps = max(1, cfg.train.steps // EVALS_PER_TRIAL) if cfg.train.steps > 0 else \
            TIME_BUDGET_MARK
    return cfg


def load_trainer(trainer: str | Trainer) -> Trainer:
    """A trainer given as a function, or as "module:function" (what a spawned worker can import)."""
    if callable(trainer):
        return trainer
    module, _, func = trainer.partition(":")
    return getattr(importlib.import_module(module), func)


def history_row(row: dict[str, Any]) -> dict[str, Any]:
    """An evaluation row as plain JSON numbers and strings (storage user attributes are JSON)."""
    return {k: float(v) if isinstance(v, float) else v for k, v in row.items()
            if v is None or isinstance(v, (bool, int, float, str))}


SECONDS = "seconds"  # a trial's own wall time so far, {"trial": its number, "s": seconds}, kept as it runs


def seconds_attr(number: int, seconds: float) -> dict[str, float]:
    """The value of a trial's `SECONDS` attribute, tagged with its own number: a trial that
    storage's retry callback copies from a stale one inherits the attribute, not the time."""
    return {"trial": number, "s": round(float(seconds), 2)}


def trial_seconds(attrs: dict[str, Any], number: int) -> float:
    """The seconds trial `number` spent (0 when unknown), from its own attributes: what a time cap
    adds up, so the tally lives in storage trial by trial (a killed round keeps what its trials
    recorded, and machines sharing one storage add, never overwrite). Trials from before the
    attribute count their recorded `wall_time`."""
    own = attrs.get(SECONDS)
    if isinstance(own, dict) and own.get("trial") == number and isinstance(own.get("s"), (int, float)):
        return float(own["s"])
    wall = attrs.get("wall_time")
    return float(wall) if isinstance(wall, (int, float)) and not isinstance(own, dict) else 0.0
