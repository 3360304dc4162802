"""The one local worker pool of `ablate --jobs N` and `tune --jobs N` (dinokit/studies/pool.py):
a SIGTERM to the parent reaches its workers, which stop and fail their trials as interrupted
instead of training on as orphans with their trials left RUNNING. The same test for both commands."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import optuna
import pytest
import yaml

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads worker processes from /proc (Linux)")]
ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "data.shapes_train=8", "data.shapes_val=4", "data.image_size=64", "data.min_size=64",
    "model.backbone=mobilenet_v3_small", "model.enc_layers=1", "model.dec_layers=2",
    "model.num_queries=20", "model.dn_number=6", "train.batch_size=4", "train.threads=1",
    "train.eval_every_steps=2500",
]
SPACE = {"metric": "AP50", "params": {"train.lr": {"low": 1e-4, "high": 1e-3, "log": True}}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private dataset cache with the shapes data written once for both commands."""
    from dinokit.config import apply_overrides, load_preset
    from dinokit.data.shapes import shapes_dir

    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DINOKIT_CACHE")
    os.environ["DINOKIT_CACHE"] = str(root)
    shapes_dir(apply_overrides(load_preset("tiny"), SMALL).data)
    yield root
    if old is None:
        os.environ.pop("DINOKIT_CACHE", None)
    else:
        os.environ["DINOKIT_CACHE"] = old


def _command(kind: str, tmp_path: Path) -> tuple[list[str], Path]:
    """`dinokit ablate|tune --jobs 2` with trials far longer than the test, and its study file."""
    sets = [x for s in SMALL for x in ("--set", s)]
    common = ["--jobs", "2", "--name", "term", "--steps", "5000", "--out", str(tmp_path / "runs"), *sets]
    if kind == "ablate":
        args = ["ablate", "--no-lft", "--seeds", "2"]
    else:
        (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
        args = ["tune", "--space", str(tmp_path / "space.yaml"), "--trials", "2"]
    return [sys.executable, "-m", "dinokit", *args, *common], tmp_path / "runs" / kind / "term" / "study.db"


def _training(db: Path) -> list[int]:
    """The RUNNING trials that a worker has signed (studies/workers.py: sign), read with plain sqlite."""
    con = sqlite3.connect(db, timeout=30)
    try:
        return [row[0] for row in con.execute(
            "SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
            "WHERE t.state = 'RUNNING' AND a.key = 'pid'")]
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()


def _workers_of(pid: int) -> list[int]:
    """The spawned worker processes whose parent is `pid` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("kind", ["ablate", "tune"])
def test_sigterm_to_the_parent_stops_its_workers(kind: str, tmp_path: Path, cache: Path) -> None:
    """`kill` on `dinokit ablate|tune --jobs 2` reaches the workers: they stop and record their
    trials as interrupted instead of training on as orphans."""
    cmd, db = _command(kind, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DINOKIT_CACHE": str(cache)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (not db.exists() or len(_training(db)) < 2):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(1)
        workers = _workers_of(proc.pid)
        assert len(workers) == 2
        running = _training(db)
        assert len(running) == 2, "both workers are training"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.5)
    assert not any(_alive(w) for w in workers), "no worker trains on after its parent is gone"
    trials = optuna.load_study(study_name="term", storage=f"sqlite:///{db}").get_trials()
    seen = [(t.number, t.state.name, t.user_attrs.get("pid"), t.user_attrs.get("error")) for t in trials]
    stopped = [t for t in trials if t.number in running]  # the trials the workers were training
    assert {t.user_attrs["pid"] for t in stopped} == set(workers), seen
    for t in stopped:  # each failed, and the reason says it was interrupted
        assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["error"].startswith("interrupted"), seen
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE)], seen


def test_an_interrupt_during_the_trainers_import_is_not_lost(monkeypatch) -> None:
    """A SIGTERM that lands while a worker is still importing the trainer (its first trial) leaves
    that module half-built; the trial's error handling must not import it again (a new ImportError
    would replace the KeyboardInterrupt: the trial failed without a reason and the worker trained
    on). Seen as a worker's further trials in the test above."""
    from dinokit.ablate.outcomes import diverged_at
    from dinokit.training.trainer import Diverged

    assert diverged_at(Diverged(7, "gradients are not finite")) == 7
    monkeypatch.setitem(sys.modules, "dinokit.training.trainer", None)  # an import of it now raises
    assert diverged_at(KeyboardInterrupt("SIGTERM")) is None
    assert diverged_at(ValueError("bad batch")) is None
