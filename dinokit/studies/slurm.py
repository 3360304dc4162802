"""Slurm jobs through submitit (the optional `dinokit[cluster]` extra): `submit_workers` (a
study's workers, one job each) and `submit_command` (`train` as one multi-node job), both
configured by a checked `Launch` (dinokit/studies/launch.py).

Each job runs this Python (`sys.executable`) with this process's PYTHONPATH and DINOKIT_CACHE,
so the jobs import the same dinokit as the command that submitted them. Job states come from
`squeue` (it answers without Slurm's accounting database, which submitit's `sacct` needs). A
preempted job is requeued by submitit itself (its USR2 handler); a cancelled one is not, and the
study's other workers or a rerun take its trial over (see dinokit/ablate/study.py).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from dinokit.errors import DinokitError, run_worker
from dinokit.studies.launch import LOCAL_FLAGS, Launch
from dinokit.studies.workers import fail_trial_on_sigterm

ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
          "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED"}
_PASSED_ENV = ("PYTHONPATH", "DINOKIT_CACHE")  # what the jobs need to import and find this dinokit


def _executor(launch: Launch, logs: Path, name: str, tasks_per_node: int = 1) -> Any:
    try:
        import submitit
    except ImportError:
        raise DinokitError("--launcher slurm needs submitit: pip install 'dinokit[cluster]'") from None
    absent = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if absent:  # submitit itself would raise a RuntimeError (a traceback) for a missing srun
        raise DinokitError(f"--launcher slurm needs Slurm's commands on PATH: {' and '.join(absent)} not found "
                           "(run it on a cluster's login node)")
    logs.mkdir(parents=True, exist_ok=True)
    executor = submitit.SlurmExecutor(folder=logs, python=shlex.quote(sys.executable))
    setup = [f"export {k}={shlex.quote(os.environ[k])}" for k in _PASSED_ENV if os.environ.get(k)]
    params: dict[str, Any] = {
        "job_name": name, "time": launch.minutes, "partition": launch.partition, "nodes": launch.nodes,
        "ntasks_per_node": tasks_per_node, "cpus_per_task": launch.cpus, "mem": launch.mem, "setup": setup,
        "gpus_per_node": launch.gpus or None, "additional_parameters": launch.sbatch_options(),
    }
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    executor.parameters["time"] = launch.minutes  # None: the partition's default limit, not submitit's 5 min
    return executor


def _sbatch(submit: Callable[[], Any]) -> str:
    try:
        return str(submit().job_id)
    except Exception as exc:  # sbatch missing or refusing (bad partition, unknown option): one line
        text = str(exc).strip().splitlines()
        raise DinokitError(f"sbatch failed: {text[-1] if text else type(exc).__name__}") from None


def _job(work: Callable[[], None], timed: bool) -> None:
    """A worker job's body: say where it runs, then work (errors end as one line).

    submitit's USR2 handler (sent before the time limit or on preemption) requeues the job, but
    it needs the job's time limit; without --time, USR2 stops the training as SIGTERM does (the
    trial fails as interrupted and is retried by the other jobs or a rerun)."""
    print(f"[slurm job {os.environ.get('SLURM_JOB_ID', '?')} on {os.uname().nodename}]", flush=True)
    fail_trial_on_sigterm()  # scancel: submitit ignores SIGTERM; fail the trial now, not after KillWait
    if not timed:
        signal.signal(signal.SIGUSR2, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    run_worker(work)


def submit(launch: Launch, workers: list[Callable[[], None]], logs: Path, name: str = "dinokit") -> list[str]:
    """One single-process job per worker; returns the job ids."""
    executor = _executor(launch, logs, name)
    timed = launch.time is not None
    return [_sbatch(lambda w=w: executor.submit(_job, w, timed)) for w in workers]  # type: ignore[misc]


def _ddp_task(target: str, params: dict[str, Any]) -> None:
    """One process of a multi-node training: torch's env:// variables from Slurm's, then the command."""
    import importlib

    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment()
    if env.world_size > 1:  # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK, as torch.distributed reads them
        env.export(set_cuda_visible_devices=False)  # dinokit picks cuda:LOCAL_RANK itself
    module, _, func = target.partition(":")
    run_worker(lambda: getattr(importlib.import_module(module), func)(**params))


def submit_ddp(launch: Launch, target: str, params: dict[str, Any], logs: Path) -> str:
    """One job of --nodes x (--gpus-per-node or 1) processes running `target(**params)`."""
    executor = _executor(launch, logs, "dinokit-train", tasks_per_node=max(1, launch.gpus))
    return _sbatch(lambda: executor.submit(_ddp_task, target, params))


def states(jobs: list[str]) -> dict[str, str]:
    """Each job's Slurm state from squeue (kept there MinJobAge seconds after the end); ENDED once
    Slurm has forgotten it."""
    r = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(jobs)],
                       capture_output=True, text=True, timeout=60)
    seen = dict(line.split()[:2] for line in r.stdout.splitlines() if len(line.split()) >= 2)
    if r.returncode != 0 and not seen and "Invalid job id" not in r.stderr:
        raise DinokitError(f"squeue failed: {r.stderr.strip() or r.returncode}")
    return {j: seen.get(j, "ENDED") for j in jobs}


def wait(jobs: list[str], poll_s: float = 5.0) -> dict[str, str]:
    """Block until every job has left the queue; returns their final states."""
    while True:
        now = states(jobs)
        if not any(s in ACTIVE for s in now.values()):
            return now
        time.sleep(poll_s)


def submit_workers(launch: Launch, workers: list[Callable[[], None]], logs: Path, progress: str,
                   say: Callable[[str], None], name: str = "dinokit") -> bool:
    """One Slurm job per worker; say their ids and the progress command. With --wait, wait for
    them and return True (the caller reports), else return False at once."""
    jobs = submit(launch, workers, logs, name)
    say(f"submitted {len(jobs)} Slurm job(s): {' '.join(jobs)} (logs: {logs})")
    say(f"progress: {progress}")
    if not launch.wait:
        say(f"cancel: scancel {' '.join(jobs)}")
        return False
    ended = wait(jobs)
    say("jobs ended: " + ", ".join(f"{j} {s}" for j, s in ended.items()))
    return True


def submit_command(launch: Launch, target: str, params: dict[str, Any], logs: Path,
                   say: Callable[[str], None]) -> None:
    """Run a CLI command again in Slurm (`module:function` called with the same `params`, but
    --launcher local) as one job of --nodes x --gpus-per-node processes in one DDP group."""
    local = {**params, **{k: v for k, v in LOCAL_FLAGS.items() if k in params}}
    job = submit_ddp(launch, target, local, logs)
    log = logs / f"{job}_0_log.out"
    say(f"submitted Slurm job {job} on {launch.nodes} node(s) (logs: {logs})")
    if not launch.wait:
        say(f"progress: tail -f {log}")
        return
    state = wait([job])[job]
    text = log.read_text(errors="replace") if log.is_file() else ""
    say("\n".join(line for line in text.splitlines()[-5:] if line.strip()))
    if state != "COMPLETED":
        raise DinokitError(f"Slurm job {job} ended {state}; see {log} and {logs / f'{job}_0_log.err'}")
