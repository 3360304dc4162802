"""Where a study lives: an Optuna RDB storage (SQLite beside the results by default, or a server
URL that several processes and machines share), opened the same way by `ablate` and `tune`."""

from __future__ import annotations

import importlib.util
import random
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from dinokit.errors import DinokitError

HEARTBEAT_S, GRACE_S = 15, 60  # a trial whose heartbeat stopped for GRACE_S is failed by the others


def default_storage(out_dir: Path) -> str:
    """The study's own SQLite file, `OUT_DIR/study.db`, as an absolute URL."""
    return f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"


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
                    heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, **_retry())
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


def _retry() -> dict[str, Any]:
    """A trial whose heartbeat stopped (its machine or Slurm job died) is queued again, twice at most."""
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9 names it so
        return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=2)}


def _with_driver(url: str) -> str:
    """`postgresql://` means psycopg2 to SQLAlchemy; with only psycopg 3 installed (the
    `[postgres]` extra) use it instead, so the plain URL works."""
    if not url.startswith("postgresql://"):
        return url
    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    if importlib.util.find_spec("psycopg2") is None:
        raise DinokitError("--storage postgresql://... needs a driver: pip install 'dinokit[postgres]'")
    return url
