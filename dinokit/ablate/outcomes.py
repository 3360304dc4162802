"""How a trial's end is recorded in storage, beyond its numbers (used by ablate/study.py).

- A diverged trial is an outcome of its arm, not a missing pair: COMPLETE, with `diverged` = the
  step and its evaluations before it (ablate/records.py scores it 0); it is not retried.
- A trial queued by storage's retry callback after a stale heartbeat is a copy of the stale trial,
  user attributes included (optuna's RetryHeartbeatStaleTrialCallback): it starts by forgetting
  what the original recorded about its outcome, so a retry that completes carries no old error.
- The time a study has used is each trial's own record, added up (studies/trials.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import optuna

from dinokit.studies.trials import SECONDS, trial_seconds

# what a trial records about its outcome (what a re-queued copy must not inherit)
OUTCOME = ("error", "traceback", "deterministic", "diverged", "history", "run_dir", "metrics", "params",
           "train_time", "wall_time", "analysis", "analysis_error", SECONDS)


def forget_copied(trial: optuna.Trial) -> None:
    """Clear the outcome attributes a re-queued copy inherited (set to None: storage keeps keys)."""
    for key in [k for k in OUTCOME if trial.user_attrs.get(k) is not None]:
        trial.set_user_attr(key, None)


def diverged_at(exc: BaseException) -> int | None:
    """The step at which training diverged, when `exc` says it did (training/trainer.py's Diverged).

    Called while a trial's exception is handled, so it imports nothing: a SIGTERM that interrupted
    the trainer's own import leaves that module half-built, and importing it again here would raise
    a new error in place of the KeyboardInterrupt, losing it (the worker would train on). A Diverged
    can only exist once its module is loaded."""
    trainer = sys.modules.get("dinokit.training.trainer")
    diverged = getattr(trainer, "Diverged", None)
    return exc.step if isinstance(diverged, type) and isinstance(exc, diverged) else None


def record_divergence(trial: optuna.Trial, step: int, run_dir: Path | None, history: list[dict[str, Any]],
                      tag: str, say: Callable[[str], None]) -> float:
    """A diverged trial is COMPLETE with `diverged` = the step and its evaluations before it; it is
    not retried (its seed would diverge again) and scores 0."""
    trial.set_user_attr("diverged", int(step))
    trial.set_user_attr("history", history)
    if run_dir is not None:
        trial.set_user_attr("run_dir", str(run_dir))
        (Path(run_dir) / "last.pt").unlink(missing_ok=True)
    last = history[-1] if history else {}
    if isinstance(last.get("train_seconds"), (int, float)):
        trial.set_user_attr("train_time", float(last["train_seconds"]))
    say(f"{tag} diverged at step {step}: an outcome of the arm, scored 0")
    return 0.0


def study_seconds(study: optuna.Study) -> float:
    """The seconds the study's trials have spent, each from its own record (a time cap's tally)."""
    return sum(trial_seconds(t.user_attrs, t.number) for t in study.get_trials(deepcopy=False))
