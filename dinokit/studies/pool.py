"""The local worker pool of `ablate --jobs N` and `tune --jobs N`: N spawned processes on one
study storage, each failing its trial as interrupted when stopped.

A SIGTERM to the parent (`kill`, a job scheduler) reaches the workers: each stops and records its
trial as interrupted (the trainer's handler inside a step; `fail_trial_on_sigterm` outside one),
as on Ctrl-C, instead of training on as an orphan with its trial left RUNNING.
"""

from __future__ import annotations

import multiprocessing
import signal
from typing import Any, Callable

from dinokit.studies.workers import fail_trial_on_sigterm

JOIN_AFTER_STOP_S = 30  # how long a stopped worker may take to record its trial before it is terminated


def _child(work: Callable[[], None]) -> None:
    """A worker process's body: a SIGTERM fails the running trial, then `work` runs."""
    fail_trial_on_sigterm()
    work()


def _forward_sigterm(procs: list[Any]) -> Any:
    """Forward this process's SIGTERM to the live workers, then stop waiting for them (as Ctrl-C
    does). Returns the previous handler (None where none can be set: not the main thread)."""

    def forward(signum: int, frame: Any) -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the trainer saves and the trial is marked interrupted
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, forward)
    except ValueError:
        return None


def run_pool(workers: list[Callable[[], None]], say: Callable[[str], None]) -> None:
    """Run each of `workers` (picklable callables) in its own process ('spawn': no forked torch
    or database state) and wait for all. Ctrl-C or SIGTERM stops them all; their trials end
    FAILED as interrupted, and KeyboardInterrupt is raised here."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(work,)) for work in workers]
    for p in procs:
        p.start()
    previous = _forward_sigterm(procs)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # the workers got the same Ctrl-C (or the forwarded SIGTERM): let them record it
        for p in procs:
            p.join(timeout=JOIN_AFTER_STOP_S)
            if p.is_alive():
                p.terminate()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        say(f"{len(bad)} worker process(es) exited with an error (codes {bad}); rerun to retry their trials")
