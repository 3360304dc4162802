"""`dinokit tune`: Optuna TPE with a pruner over a search space; each trial is a training run.

Each trial reports the space's metric (AP50 by default) at every evaluation of its run
(trial.report); the pruner (median or Hyperband) stops poor trials there, by raising
optuna.TrialPruned from the trainer's evaluation callback. The study lives in an Optuna RDB
storage (default sqlite in runs/tune/NAME, or --storage URL shared by several processes or
machines) exactly as `dinokit ablate`'s, so a rerun resumes: finished and pruned trials count,
only the missing ones are trained; trials whose worker died are failed and not counted.

A trial's value, the one TPE learns from and the report ranks by, is the mean of its last
`RANK_LAST` evaluations (fewer if it had fewer), not its single best one: a lucky peak in a
noisy curve does not win. A pruned trial keeps no resume state (`last.pt`), as a finished one.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from dinokit.config import Config, check_budget, diff_configs, plain
from dinokit.errors import DinokitError, run_worker
from dinokit.studies.launch import Launch
from dinokit.studies.pool import run_pool
from dinokit.studies.slurm import submit_workers
from dinokit.studies.storage import default_storage, open_storage, safe_url
from dinokit.studies.trials import DEFAULT_TRAINER, history_row, label_trial, load_trainer
from dinokit.studies.workers import reap_dead, sign, threads_per_job
from dinokit.training.signals import StopRun
from dinokit.tune.space import SearchSpace, apply_values, check_space

RANK_LAST = 3  # a trial's value: the mean of its last evaluations, this many
_LOCAL = ("train.threads", "train.out", "train.name", "train.device", "data.workers",  # may differ per worker
          "train.tensorboard", "train.mlflow", "train.tags")  # and per run: the loggers
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
Say = Callable[[str], None]


@dataclass
class TuneSpec:
    """One search: a space over a base config (preset + data + --set + per-trial budget)."""

    name: str
    space: SearchSpace
    base: Config
    out_dir: Path  # runs/tune/<name>: trial runs and the report
    trials: int
    storage: str = ""  # "" -> sqlite in out_dir
    seed: int = 0  # the TPE sampler's
    trainer: str | Callable[..., Any] = DEFAULT_TRAINER  # "module:function" or a function like train()

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.storage = self.storage or default_storage(self.out_dir)

    def identity(self) -> dict[str, Any]:
        return plain({"space": self.space.to_dict(), "base": self.base.to_dict()})


def _sampler(spec: TuneSpec, worker: int = 0) -> optuna.samplers.TPESampler:
    """TPE after 3 random trials; parallel workers draw from different seeds."""
    return optuna.samplers.TPESampler(seed=spec.seed + worker, n_startup_trials=3)


def _pruner(spec: TuneSpec) -> optuna.pruners.BasePruner:
    if spec.space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=spec.space.prune_after)


def prepare(spec: TuneSpec) -> optuna.Study:
    """Create or load the study; a rerun with another space or base config is an error."""
    if spec.trials < 1:
        raise DinokitError(f"--trials must be at least 1, got {spec.trials}")
    check_budget(spec.base.train)
    check_space(spec.space, spec.base)
    if spec.storage == default_storage(spec.out_dir):
        spec.out_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=open_storage(spec.storage), study_name=spec.name, direction="maximize",
                                sampler=_sampler(spec), pruner=_pruner(spec), load_if_exists=True)
    mine, stored = spec.identity(), study.user_attrs.get("dinokit_tune")
    if stored is None:
        if study.user_attrs.get("dinokit"):
            raise DinokitError(f"'{spec.name}' in {safe_url(spec.storage)} is an ablation; use another --name")
        study.set_user_attr("dinokit_tune", mine)
        return study
    where = f"tune study '{spec.name}' in {safe_url(spec.storage)}"
    if stored["space"] != mine["space"]:
        raise DinokitError(f"{where} searched another space; use another --name (or delete its folder)")
    changed = [d for d in diff_configs(stored["base"], mine["base"]) if not d.startswith(_LOCAL)]
    if changed:
        raise DinokitError(f"{where} was started with other settings ({changed[0]}); use another --name")
    return study


class Pruned(optuna.TrialPruned, StopRun):
    """The pruner's stop: optuna records the trial as PRUNED, the trainer ends the run cleanly."""


def rank_value(values: list[float]) -> float:
    """A trial's value from its metric at each evaluation, in step order: the mean of the last
    `RANK_LAST` (0.0 before any evaluation)."""
    last = values[-RANK_LAST:]
    return sum(last) / len(last) if last else 0.0


class Objective:
    """Trains one trial's configuration, reporting the metric at every evaluation."""

    def __init__(self, spec: TuneSpec, threads: int, progress: bool, say: Say) -> None:
        self.spec, self.threads, self.progress, self.say = spec, threads, progress, say

    def __call__(self, trial: optuna.Trial) -> float:
        sign(trial)
        values = {p.name: p.suggest(trial) for p in self.spec.space.params}
        cfg = apply_values(self.spec.base, values)
        cfg.train.threads = cfg.train.threads or self.threads
        cfg.train.out, cfg.train.name = str(self.spec.out_dir), f"trial-{trial.number}"
        label_trial(cfg, self.spec.name, trial=trial.number, seed=cfg.train.seed)  # MLflow tags
        metric = self.spec.space.metric
        history: list[dict[str, Any]] = []

        def on_epoch(row: dict[str, Any]) -> None:
            history.append(history_row(row))
            trial.set_user_attr("history", history)
            if isinstance(row.get(metric), (int, float)):
                trial.report(float(row[metric]), step=int(row["step"]))
                if trial.should_prune():
                    raise Pruned(f"{metric} {row[metric]:.3f} at step {row['step']}")

        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        self.say(f"trial {trial.number}: {shown}")
        try:
            result = load_trainer(self.spec.trainer)(cfg, progress=self.progress, on_epoch=on_epoch)
        except optuna.TrialPruned as exc:
            self.say(f"trial {trial.number} pruned: {exc}")
            raise
        except KeyboardInterrupt:  # Ctrl-C, or a SIGTERM outside a step: optuna fails the trial
            trial.set_user_attr("error", "interrupted (Ctrl-C or SIGTERM)")
            self.say(f"trial {trial.number} interrupted")
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc).strip()[:400]}")
            self.say(f"trial {trial.number} FAILED: {exc}")
            raise
        if getattr(result, "interrupted", False):  # the trainer stopped at a step on Ctrl-C / SIGTERM
            trial.set_user_attr("error", f"interrupted (Ctrl-C or SIGTERM) at step {getattr(result, 'steps', '?')}")
            self.say(f"trial {trial.number} interrupted")
            raise KeyboardInterrupt(f"trial {trial.number} interrupted")
        value = rank_value([float(r[metric]) for r in history if isinstance(r.get(metric), (int, float))])
        trial.set_user_attr("run_dir", str(result.run_dir))
        (Path(result.run_dir) / "last.pt").unlink(missing_ok=True)  # trials restart rather than resume
        self.say(f"trial {trial.number}: {metric} {value:.3f} (mean of the last {RANK_LAST} evaluations)")
        return value


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def work(spec: TuneSpec, threads: int, progress: bool = True, say: Say = print, worker: int = 0) -> None:
    """One worker: train trials until the study holds `spec.trials` finished or pruned ones."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(spec.storage)
    reap_dead(optuna.load_study(study_name=spec.name, storage=storage), storage)
    study = optuna.load_study(study_name=spec.name, storage=storage, sampler=_sampler(spec, worker),
                              pruner=_pruner(spec))
    objective = Objective(spec, threads, progress, say)
    stop = optuna.study.MaxTrialsCallback(spec.trials, states=COUNTED)
    for _ in range(2 * spec.trials):  # failed trials do not count; bounded so that a broken setup ends
        if finished(study) >= spec.trials:
            return
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[stop])


def _worker_main(spec: TuneSpec, threads: int, worker: int) -> None:
    def say(message: str) -> None:
        print(f"[worker {os.getpid()}] {message}", flush=True)

    run_worker(lambda: work(spec, threads, progress=False, say=say, worker=worker))


def run(spec: TuneSpec, jobs: int = 1, progress: bool = True, say: Say = print,
        launch: Launch | None = None) -> optuna.Study | None:
    """Run (or resume) the search with `jobs` worker processes (or Slurm jobs); returns the
    study, or None when Slurm jobs were submitted without --wait."""
    if jobs < 1:
        raise DinokitError(f"--jobs must be at least 1, got {jobs}")
    study = prepare(spec)
    done = finished(study)
    say(f"tune {spec.name}: {len(spec.space.params)} parameters, {spec.trials} trials, {done} done "
        f"({safe_url(spec.storage)})")
    if done < spec.trials:
        threads = threads_per_job(jobs)
        if launch is not None and launch.on_slurm:
            workers = [partial(_worker_main, spec, launch.threads, i) for i in range(jobs)]
            watch = f"optuna-dashboard '{safe_url(spec.storage)}'"
            if not submit_workers(launch, workers, spec.out_dir / "slurm", watch, say, f"dinokit-tune-{spec.name}"):
                return None
        elif jobs == 1:
            work(spec, threads, progress, say)
        else:  # SIGTERM reaches the workers; their trials fail as interrupted (studies/pool.py)
            run_pool([partial(_worker_main, spec, threads, i) for i in range(jobs)], say)
    return optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage))
