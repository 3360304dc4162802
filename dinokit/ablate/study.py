"""An ablation as an Optuna study: every (arm, seed) pair is one trial, trained once.

Why Optuna: its RDB storage is the shared, crash-safe ledger. Rerunning a command resumes (a
finished trial is never trained again), several processes or machines pointed at one storage
split the work, and the report is rebuilt from the ledger alone.

Who trains which pair:
- a `GridSampler` over (arm, seed) hands out fresh pairs; the first n trials of a study get
  n distinct grid points by construction, whatever the number of workers;
- pairs that failed or were interrupted in an earlier run are queued again (`enqueue_trial`);
  a pair that failed in this run waits for the next run (no retry loops). A deterministic failure
  (a DinokitError: bad data, a refused setting) is not queued again: it would fail the same way
  (`retry_failed`, `--retry-failed`, after fixing its cause). A diverged trial is not a failure:
  it is COMPLETE with `diverged` = the step, an outcome of its arm (ablate/records.py scores it);
- before training, a trial checks the ledger: if its pair is COMPLETE or held by a live trial
  with a lower number, it steps aside (PRUNED, user attr `skipped`). Trials record their pair
  before this check, so of two trials racing for a pair exactly one trains it;
- dead workers: on the same host a trial whose pid is gone is failed at once; elsewhere the
  storage heartbeat fails it after `GRACE_S` seconds.
"""

from __future__ import annotations

import os
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from dinokit.ablate.arms import BASELINE, STEPS, Arm, ArmSet, arm_config, validate_arms
from dinokit.ablate.ledger import Ledger, Pair, holder_of, pair_of
from dinokit.ablate.outcomes import diverged_at, forget_copied, record_divergence, study_seconds
from dinokit.ablate.pairing import SharedInit
from dinokit.ablate.steps import legacy_steps
from dinokit.config import Config, check_budget, diff_configs, plain
from dinokit.errors import DinokitError, run_worker
from dinokit.studies.launch import Launch
from dinokit.studies.pool import run_pool
from dinokit.studies.slurm import submit_workers
from dinokit.studies.storage import default_storage, open_storage, safe_url
from dinokit.studies.trials import (
    DEFAULT_TRAINER, SECONDS, history_row, label_trial, load_trainer, seconds_attr,
)
from dinokit.studies.workers import reap_dead, sign, threads_per_job

# may differ between the processes and machines that share one study (and runs of it: the loggers)
_LOCAL = ("train.threads", "train.out", "train.name", "train.seed", "train.device", "data.workers",
          "train.tensorboard", "train.mlflow", "train.tags")
Say = Callable[[str], None]


@dataclass
class AblationSpec:
    """One ablation: arms x seeds under one base config and budget, stored under `name`."""

    name: str
    arm_set: ArmSet
    seeds: list[int]
    base: Config  # preset + data + --set + budget; seed/threads/out/name are set per trial
    out_dir: Path  # runs/ablate/<name>: trial runs and the report
    storage: str = ""  # Optuna RDB URL; "" -> sqlite in out_dir
    meta: dict[str, Any] = field(default_factory=dict)  # shown in the report (preset, data, budget)
    trainer: str | Callable[..., Any] = DEFAULT_TRAINER  # "module:function" or a function like train()
    wanted: list[Pair] | None = None  # a sequential round: only these pairs (None: every arm x seed)
    max_seconds: float | None = None  # the study's trial-seconds after which no worker starts a trial (--max-hours)
    retry_failed: bool = False  # retry pairs that failed deterministically (their cause was fixed)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.storage = self.storage or default_storage(self.out_dir)

    @property
    def pairs(self) -> list[Pair]:
        if self.wanted is not None:
            return list(self.wanted)
        return [(a, s) for s in self.seeds for a in self.arm_set.names]

    def identity(self) -> dict[str, Any]:
        """What a rerun must match to resume this study; stored in the study itself."""
        return plain({"arms": [a.to_dict() for a in self.arm_set.arms], "baseline": self.arm_set.baseline,
                       "description": self.arm_set.description, "kind": self.arm_set.kind, "seeds": list(self.seeds),
                       "base": self.base.to_dict(), "meta": self.meta})

    @classmethod
    def from_identity(cls, name: str, ident: dict[str, Any], storage: str, out_dir: Path) -> "AblationSpec":
        arms = ArmSet(tuple(Arm.from_dict(a) for a in ident["arms"]), ident["baseline"], ident.get("description", ""))
        # a study stored before `kind` keeps the question it was run with
        arms = ArmSet(arms.arms, arms.baseline, arms.description,
                      ident.get("kind") or (STEPS if legacy_steps(arms) else BASELINE))
        return cls(name, arms, list(ident["seeds"]), Config.from_dict(ident["base"]), out_dir, storage,
                   dict(ident.get("meta", {})))


def check_spec(spec: AblationSpec) -> None:
    """Everything that can be wrong with the input, checked before any training."""
    if not spec.seeds:
        raise DinokitError("the grid is empty: --seeds must be at least 1")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise DinokitError(f"seeds must be distinct, got {spec.seeds}")
    t = spec.base.train
    check_budget(t)
    validate_arms(spec.arm_set, spec.base)


class _PairGrid(optuna.samplers.GridSampler):
    """GridSampler over (arm, seed) that accepts queued retries: for a trial made by
    `enqueue_trial` (no grid id) GridSampler's own `after_trial` raises KeyError."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        if "grid_id" in trial.system_attrs:
            super().after_trial(study, trial, state, values)


def _sampler(spec: AblationSpec) -> optuna.samplers.GridSampler:
    return _PairGrid({"arm": spec.arm_set.names, "seed": list(spec.seeds)}, seed=0)


def prepare(spec: AblationSpec) -> optuna.Study:
    """Create or load the study; a rerun with other arms, seeds or settings is an error."""
    check_spec(spec)
    if spec.storage == default_storage(spec.out_dir):
        spec.out_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=open_storage(spec.storage), study_name=spec.name, sampler=_sampler(spec),
                                direction="maximize", load_if_exists=True)
    mine, stored = spec.identity(), study.user_attrs.get("dinokit")
    if stored is None:
        study.set_user_attr("dinokit", mine)
        return study
    where = f"ablation '{spec.name}' in {safe_url(spec.storage)}"
    if [stored[k] for k in ("arms", "seeds", "baseline")] != [mine[k] for k in ("arms", "seeds", "baseline")]:
        raise DinokitError(f"{where} has other arms or seeds; use another --name (or delete its folder)")
    if stored.get("kind", mine["kind"]) != mine["kind"]:
        raise DinokitError(f"{where} asks another question (kind {stored['kind']}, not {mine['kind']}); "
                           "use another --name")
    changed = [d for d in diff_configs(stored["base"], mine["base"]) if not d.startswith(_LOCAL)]
    if changed:
        raise DinokitError(f"{where} was started with other settings ({changed[0]}); use another --name")
    return study


# --------------------------------------------------------------------------- one trial


def run_name(pair: Pair, attempt: int) -> str:
    return f"trial-{pair[0]}-s{pair[1]}" + (f"-retry{attempt}" if attempt else "")


class Objective:
    """Trains the trial's (arm, seed) with the real trainer and records everything in the trial."""

    def __init__(self, spec: AblationSpec, run_id: str, threads: int, progress: bool, say: Say) -> None:
        self.spec, self.run_id, self.threads, self.progress, self.say = spec, run_id, threads, progress, say

    def __call__(self, trial: optuna.Trial) -> float:
        sign(trial, run_id=self.run_id)
        try:
            return self._run(trial)
        except KeyboardInterrupt as exc:  # a SIGTERM anywhere after signing (storage reads included)
            if "error" not in trial.user_attrs:  # the trial's own handler did not get to say why
                trial.set_user_attr("error", f"interrupted ({exc or 'KeyboardInterrupt'})"[:500])
            raise

    def _run(self, trial: optuna.Trial) -> float:
        forget_copied(trial)
        arm = trial.suggest_categorical("arm", self.spec.arm_set.names)
        seed = trial.suggest_categorical("seed", list(self.spec.seeds))
        if self.spec.wanted is not None and (arm, seed) not in self.spec.wanted:  # not this round's
            trial.set_user_attr("skipped", f"{arm}/s{seed} is not in this round")
            raise optuna.TrialPruned(f"{arm}/s{seed} is not in this round")
        holder = holder_of(trial.study, trial.number, (arm, seed))
        if holder is not None:
            trial.set_user_attr("skipped", f"{arm}/s{seed} belongs to trial {holder}")
            raise optuna.TrialPruned(f"{arm}/s{seed} is trial {holder}'s")
        failed = trial.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        attempt = sum(pair_of(t) == (arm, seed) for t in failed)
        tag = f"trial {trial.number}: {arm} seed {seed}"
        history: list[dict[str, Any]] = []
        start = time.perf_counter()
        try:  # from here a SIGTERM (KeyboardInterrupt) is recorded on the trial as interrupted
            cfg = arm_config(self.spec.base, self.spec.arm_set.get(arm))
            cfg.train.seed, cfg.train.threads = int(seed), cfg.train.threads or self.threads
            cfg.train.out, cfg.train.name = str(self.spec.out_dir), run_name((arm, seed), attempt)
            label_trial(cfg, self.spec.name, arm=arm, seed=seed, trial=trial.number)  # MLflow tags, the model card

            def on_epoch(row: dict[str, Any]) -> None:
                history.append(history_row(row))
                trial.set_user_attr("history", history)  # partial curves survive an interruption
                trial.set_user_attr(SECONDS, seconds_attr(trial.number, time.perf_counter() - start))
                if isinstance(row.get("AP50"), (int, float)):  # the convergence curve, mark by mark
                    trial.report(float(row["AP50"]), step=int(row.get("step", len(history))))

            self.say(f"{tag} ({cfg.train.name})")
            init = SharedInit(plain(self.spec.base.model.__dict__), int(seed))  # paired initial weights
            result = load_trainer(self.spec.trainer)(cfg, progress=self.progress, on_epoch=on_epoch, init_model=init)
        except BaseException as exc:  # KeyboardInterrupt too: the trial is failed, then we stop
            step = diverged_at(exc)
            if step is None:  # the reason first: the storage writes below are slow on a busy machine
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                reason = "interrupted (KeyboardInterrupt)" if isinstance(exc, KeyboardInterrupt) else \
                    f"{type(exc).__name__}: {text}"
                trial.set_user_attr("error", reason[:500])
            trial.set_user_attr(SECONDS, seconds_attr(trial.number, time.perf_counter() - start))
            if step is not None:  # an outcome of the arm, not a missing pair: counted (ablate/records.py)
                return record_divergence(trial, step, getattr(exc, "run_dir", None), history, tag, self.say)
            trial.set_user_attr("traceback", traceback.format_exc(limit=-8)[-4000:])
            if isinstance(exc, DinokitError):  # the same input fails the same way: not retried as transient
                trial.set_user_attr("deterministic", True)
            self.say(f"{tag} FAILED: {reason}")
            raise
        wall = time.perf_counter() - start
        rows = [history_row(r) for r in result.history] or history
        trial.set_user_attr("history", rows)
        trial.set_user_attr("run_dir", str(result.run_dir))
        if getattr(result, "interrupted", False):  # the trainer stopped early on Ctrl-C / SIGTERM
            reason = f"interrupted (Ctrl-C or SIGTERM) at step {getattr(result, 'steps', '?')}"
            trial.set_user_attr("error", reason)
            self.say(f"{tag} {reason}")
            raise KeyboardInterrupt(reason)
        best = {k: float(v) for k, v in result.best.items() if isinstance(v, (int, float))}
        last = rows[-1] if rows else {}
        elapsed = float(last.get("train_seconds", last.get("elapsed", wall)))  # training only, no evaluation
        for key, value in {"metrics": best, "params": int(result.params), "train_time": elapsed,
                           "wall_time": wall}.items():
            trial.set_user_attr(key, value)
        (Path(result.run_dir) / "last.pt").unlink(missing_ok=True)  # resume state; trials restart instead
        _analyse(trial, Path(result.run_dir) / "best.pt", cfg.train.device, self.say)
        trial.set_user_attr(SECONDS, seconds_attr(trial.number, time.perf_counter() - start))
        self.say(f"{tag} AP {100 * best.get('AP', 0.0):.1f} ({elapsed:.0f} s)")
        return best.get("AP", 0.0)


def _analyse(trial: optuna.Trial, best: Path, device: str, say: Say) -> None:
    """Per-class, per-size and error-type numbers of the trial's best checkpoint (see
    ablate/breakdown.py); a failure here is noted, the trial still counts."""
    if not best.is_file():
        return
    from dinokit.ablate.breakdown import analyse_checkpoint

    try:
        trial.set_user_attr("analysis", analyse_checkpoint(best, device))
    except Exception as exc:  # the trained result stands; the breakdown shows n/a for it
        trial.set_user_attr("analysis_error", f"{type(exc).__name__}: {exc}"[:500])
        say(f"trial {trial.number}: no per-class/error analysis ({type(exc).__name__}: {exc})")


# --------------------------------------------------------------------------- workers


def work(spec: AblationSpec, run_id: str, threads: int, progress: bool = True, say: Say = print) -> None:
    """One worker: take pairs from the shared study until none is left for this run."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(spec.storage)
    study = optuna.load_study(study_name=spec.name, storage=storage, sampler=_sampler(spec))
    objective = Objective(spec, run_id, threads, progress, say)
    for _ in range(20 * len(spec.pairs) + 20):  # each round finishes one trial; bounded for safety
        if spec.max_seconds is not None and study_seconds(study) >= spec.max_seconds:
            say(f"ablation {spec.name}: the time cap is reached; no new trial starts")
            return
        reap_dead(study, storage)
        ledger = Ledger.read(study, run_id)
        pending = ledger.pending(spec.pairs, spec.retry_failed)
        if not pending and not ledger.waiting:
            return
        if not ledger.waiting:  # retries go through the queue; fresh pairs come from the grid
            for arm, seed in (p for p in pending if p in ledger.attempted or spec.wanted is not None):
                study.enqueue_trial({"arm": arm, "seed": seed})
        study.optimize(objective, n_trials=1, catch=(Exception,))
    raise DinokitError(f"ablation '{spec.name}': a worker made no progress")


def _worker_main(spec: AblationSpec, run_id: str, threads: int) -> None:
    """Entry point of a spawned worker (--jobs N): errors end as one line, not a traceback."""

    def say(message: str) -> None:
        print(f"[worker {os.getpid()}] {message}", flush=True)

    run_worker(lambda: work(spec, run_id, threads, progress=False, say=say))


def _job_worker(spec: AblationSpec, threads: int) -> None:
    """One Slurm job (--launcher slurm): a worker with its own run id, so that a pair which
    another job left failed (cancelled, preempted) is retried here."""
    _worker_main(spec, uuid.uuid4().hex[:12], threads)


def run(spec: AblationSpec, jobs: int = 1, progress: bool = True, say: Say = print,
        launch: Launch | None = None) -> Ledger | None:
    """Run (or resume) the ablation with `jobs` worker processes (or Slurm jobs). Returns the
    ledger at the end: pairs done, still running in other processes, failed in this run; None
    when Slurm jobs were submitted without --wait."""
    if jobs < 1:
        raise DinokitError(f"--jobs must be at least 1, got {jobs}")
    study = prepare(spec)
    run_id = uuid.uuid4().hex[:12]
    ledger = Ledger.read(study, run_id)
    # and the trials storage's retry callback queued (a stale heartbeat): live, yet they need a worker
    todo = len(ledger.pending(spec.pairs, spec.retry_failed)) + ledger.waiting
    grid = (f"{len(spec.arm_set.arms)} arms x {len(spec.seeds)} seeds = {len(spec.pairs)} trials"
            if spec.wanted is None else f"this round {len(spec.pairs)} trials")
    say(f"ablation {spec.name}: {grid}, {len(ledger.done)} done, {todo} to run ({safe_url(spec.storage)})")
    threads = threads_per_job(jobs)
    if todo and launch is not None and launch.on_slurm:
        workers = [partial(_job_worker, spec, launch.threads) for _ in range(min(jobs, todo))]
        report = (f"dinokit ablate report {spec.name} --storage '{safe_url(spec.storage)}' "
                  f"--out {spec.out_dir.parent.parent}")
        if not submit_workers(launch, workers, spec.out_dir / "slurm", report, say, f"dinokit-ablate-{spec.name}"):
            return None
    elif todo and jobs == 1:
        work(spec, run_id, threads, progress, say)
    elif todo:
        run_pool([partial(_worker_main, spec, run_id, threads) for _ in range(min(jobs, todo))], say)
    return Ledger.read(study, run_id)


# --------------------------------------------------------------------------- reading back


def read_trials(storage_url: str, name: str) -> tuple[AblationSpec, list[dict[str, Any]]]:
    """The ablation's definition and one record per real trial (queued and stepped-aside ones are
    bookkeeping), from storage alone: no training, no run folders needed."""
    storage = open_storage(storage_url)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise DinokitError(f"no ablation named '{name}' in {safe_url(storage_url)}") from None
    ident = study.user_attrs.get("dinokit")
    if not ident:
        raise DinokitError(f"study '{name}' in {safe_url(storage_url)} is not a dinokit ablation")
    records = []
    for t in study.get_trials(deepcopy=False):
        pair = pair_of(t)
        if pair is not None and t.state != TrialState.WAITING and "skipped" not in t.user_attrs:
            records.append({"trial": t.number, "state": t.state.name, "arm": pair[0], "seed": pair[1],
                            "attrs": t.user_attrs, "started": t.datetime_start, "finished": t.datetime_complete})
    return AblationSpec.from_identity(name, ident, storage_url, Path(".")), records
