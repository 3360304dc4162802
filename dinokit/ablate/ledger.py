"""The shared ledger behind an ablation: the Optuna storage, and who holds which (arm, seed).

Every process or machine working on one study reads the same ledger: a pair is done when a
trial for it is COMPLETE, taken while a live trial holds it, and free again when its holder
died (same host: its pid is gone; elsewhere: its heartbeat stopped for `GRACE_S` seconds).
"""

from __future__ import annotations

import os
import random
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dinokit.errors import DinokitError

Pair = tuple[str, int]

HEARTBEAT_S, GRACE_S = 15, 60
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


def safe_url(url: str) -> str:
    """The URL without its password, for messages and reports."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats. SQLite transactions are made immediate (serialised), so
    claiming a queued trial is atomic there too, as row locks make it on server databases."""
    if "://" not in url:
        raise DinokitError(f"--storage must be a database URL such as sqlite:///path/study.db, got '{url}'")
    sqlite = url.startswith("sqlite")
    shown, url = url, _with_driver(url)
    for attempt in range(8):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else {},
                    heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
            break
        except Exception as exc:  # driver missing, host unreachable, bad path: all one line
            text = str(exc).strip()
            if attempt < 7 and any(m in text for m in ("already exists", "UNIQUE constraint", "is locked")):
                time.sleep(0.1 + 0.3 * random.random())  # another process is creating the tables
                continue
            reason = text.splitlines()[0] if text else type(exc).__name__
            raise DinokitError(f"cannot open storage {safe_url(shown)}: {reason}") from None
    if sqlite:
        from sqlalchemy import event

        @event.listens_for(storage.engine, "connect")
        def _no_driver_transactions(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy's BEGIN below replaces pysqlite's

        @event.listens_for(storage.engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        storage.engine.dispose()
    return storage


def _with_driver(url: str) -> str:
    """`postgresql://` means psycopg2 to SQLAlchemy; with only psycopg 3 installed (the
    `[postgres]` extra) use it instead, so the plain URL works."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    if importlib.util.find_spec("psycopg2") is None:
        raise DinokitError("--storage postgresql://... needs a driver: pip install 'dinokit[postgres]'")
    return url


def pair_of(t: FrozenTrial) -> Pair | None:
    """A trial's (arm, seed): its params, or the fixed params of a queued trial."""
    p = t.params if "arm" in t.params else t.system_attrs.get("fixed_params", {})
    return (p["arm"], int(p["seed"])) if "arm" in p and "seed" in p else None


def _dead(t: FrozenTrial) -> bool:
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


def _live(t: FrozenTrial) -> bool:
    return t.state == TrialState.WAITING or (t.state == TrialState.RUNNING and not _dead(t))


def reap_dead(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Fail trials whose worker died (killed, crashed) so their pair is retried, with the reason."""
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _dead(t):
            tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            try:
                storage.set_trial_user_attr(tid, "error", f"interrupted: worker process {t.user_attrs['pid']} "
                                                          f"on {HOST} is gone (killed?)")
                storage.set_trial_state_values(tid, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker reaped it first


def holder_of(study: optuna.Study, number: int, pair: Pair, wait_s: float = 30.0) -> int | None:
    """The trial that owns `pair` instead of trial `number`, or None if `number` may train it.

    Owners: a COMPLETE trial of the pair, or a live one with a lower number. Lower running trials
    that have not recorded their pair yet are waited for (milliseconds, unless their worker died).
    """
    deadline = time.monotonic() + wait_s
    while True:
        undecided = False
        for t in study.get_trials(deepcopy=False):
            p = pair_of(t)
            if t.number != number and p == pair and (t.state == TrialState.COMPLETE or
                                                     (t.number < number and _live(t))):
                return t.number
            undecided |= p is None and t.number < number and t.state == TrialState.RUNNING and not _dead(t)
        if not undecided or time.monotonic() > deadline:
            return None
        time.sleep(0.2)


@dataclass
class Ledger:
    """Every pair's state as one worker sees it now."""

    done: set[Pair] = field(default_factory=set)
    live: set[Pair] = field(default_factory=set)  # queued or running (maybe in another process)
    failed_now: set[Pair] = field(default_factory=set)  # failed in this run: left for the next
    attempted: set[Pair] = field(default_factory=set)  # failed at some point
    waiting: int = 0

    @classmethod
    def read(cls, study: optuna.Study, run_id: str) -> "Ledger":
        led = cls()
        for t in study.get_trials(deepcopy=False):
            p = pair_of(t)
            led.waiting += t.state == TrialState.WAITING
            if p is None:
                continue
            if t.state == TrialState.COMPLETE:
                led.done.add(p)
            elif _live(t):
                led.live.add(p)
            elif t.state == TrialState.FAIL:
                led.attempted.add(p)
                if t.user_attrs.get("run_id") == run_id:
                    led.failed_now.add(p)
        return led

    def pending(self, pairs: list[Pair]) -> list[Pair]:
        return [p for p in pairs if p not in self.done | self.live | self.failed_now]
