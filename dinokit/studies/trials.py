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


def study_logging(cfg: Config, name: str, out_dir: Path, loggers: list[str] | None = None,
                  mlflow_uri: str | None = None) -> Config:
    """`--logger NAME ...` / `--mlflow-uri` of ablate and tune, into the base config.

    With MLflow on (`--logger mlflow`), every trial of study `name` logs a run into one
    experiment named after the study, in one store: `train.mlflow_uri`, else $MLFLOW_TRACKING_URI,
    else a sqlite store in the study folder. Both are fixed in the base config here (so a later
    `ablate report` finds the runs) and the experiment is created now, before workers start, so
    parallel workers never race to create the store. Returns `cfg`, changed in place."""
    from dinokit.training.loggers import logger_fields

    for key, value in logger_fields(list(loggers or []), mlflow_uri).items():
        if value is not None:
            setattr(cfg.train, key, value)
    if not cfg.train.mlflow:
        return cfg
    from dinokit.training.mlflow_log import open_experiment, tracking_uri

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.train.mlflow_uri = tracking_uri(cfg.train, out_dir)
    cfg.train.mlflow_experiment = cfg.train.mlflow_experiment or name
    open_experiment(cfg.train.mlflow_uri, cfg.train.mlflow_experiment)
    return cfg


def label_trial(cfg: Config, study: str, **labels: Any) -> Config:
    """A trial's labels in its config (`train.tags`): the study and, e.g., its arm, seed and
    trial number. The loggers record them (MLflow tags, to compare arms in MLflow's UI) and the
    trial's checkpoint keeps them (a model card names its study). Returns `cfg`, changed in place."""
    cfg.train.tags = {**cfg.train.tags, "study": study, **{k: str(v) for k, v in labels.items()}}
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
