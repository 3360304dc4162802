"""The processes that train a study's trials: who they are (host, pid, pid namespace), how many
threads each gets, and how a trial whose worker died is failed so that its work is redone."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

JOB_ATTR = "slurm_job"  # the trial's user attr naming the Slurm job that trained it


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM (the worker was asked to stop)")


def fail_trial_on_sigterm() -> None:
    """In a worker process: a SIGTERM outside a training step (building the model, loading data,
    between trials) fails the running trial at once as interrupted, instead of killing the process
    with its trial left RUNNING. Inside a step the trainer's own handler stops at the next step."""
    signal.signal(signal.SIGTERM, _interrupted)

HOST = socket.gethostname()


def _process_space() -> str:
    """Where a pid means the same process: host name + boot + pid namespace (containers differ)."""
    parts = [HOST]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(Path(path).read_text().strip()[:8] if "boot" in path else str(os.stat(path).st_ino))
        except OSError:
            pass
    return ":".join(parts)


PID_SPACE = _process_space()


def job_attrs() -> dict[str, str]:
    """What a trial records about the Slurm job it runs in (nothing outside Slurm)."""
    job = os.environ.get("SLURM_JOB_ID")
    return {JOB_ATTR: job} if job else {}


def sign(trial: optuna.Trial, **extra: str) -> None:
    """Record which process (and Slurm job) trains `trial`, and any `extra` attributes, so that a
    dead worker's trial can be told from a live one."""
    for key, value in {"host": HOST, "pid": os.getpid(), "pid_space": PID_SPACE, **job_attrs(), **extra}.items():
        trial.set_user_attr(key, value)


def worker_gone(t: FrozenTrial) -> bool:
    """A running trial whose worker process on this host has gone."""
    if t.state != TrialState.RUNNING or t.user_attrs.get("pid_space") != PID_SPACE or "pid" not in t.user_attrs:
        return False
    try:
        os.kill(int(t.user_attrs["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def reap_dead(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Fail trials whose worker died (killed, crashed) so their work is retried, with the reason."""
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if worker_gone(t):
            tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            try:
                storage.set_trial_user_attr(tid, "error", f"interrupted: worker process {t.user_attrs['pid']} "
                                                          f"on {HOST} is gone (killed?)")
                storage.set_trial_state_values(tid, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker reaped it first


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of `jobs` parallel trials: the cores shared out, at least one."""
    return max(1, cpu_cores() // jobs)
