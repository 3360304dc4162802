"""Two `dinokit ablate` workers on one PostgreSQL database, one killed mid-trial: every
(arm, seed) pair is still trained, exactly once to completion.

Needs a server: set DINOKIT_TEST_POSTGRES to a URL such as
postgresql://user:password@localhost/dbname (`.ci/run` installs, starts and exports one).
Without it the test skips with the reason; with DINOKIT_REQUIRE_POSTGRES=1 it fails instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dinokit.errors import DinokitError
from tests.services import POSTGRES_URL as URL
from tests.services import needs, unavailable

pytestmark = [pytest.mark.slow, needs("POSTGRES")]  # _storage() tells whether it can run
ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "data.shapes_train=8", "data.shapes_val=4", "data.image_size=64", "data.min_size=64",
    "model.backbone=mobilenet_v3_small", "model.enc_layers=1", "model.dec_layers=2",
    "model.num_queries=20", "model.dn_number=6", "train.batch_size=4", "train.threads=1",
]


def _storage() -> optuna.storages.RDBStorage:
    """The server's storage, or a skip (a failure when CI promised a server)."""
    from dinokit.studies.storage import open_storage

    reason = ""
    if not URL:
        reason = "no PostgreSQL server: set DINOKIT_TEST_POSTGRES=postgresql://user:pass@host/db"
    else:
        try:
            return open_storage(URL)
        except DinokitError as exc:
            reason = f"PostgreSQL at DINOKIT_TEST_POSTGRES not usable: {exc}"
    unavailable("POSTGRES", reason)


def _cmd(out: Path, name: str) -> list[str]:
    sets = [x for s in SMALL for x in ("--set", s)]
    return [sys.executable, "-m", "dinokit.ablate.cli", "--no-lft", "--seeds", "2", "--steps", "4",
            "--eval-every", "2", "--name", name, "--storage", URL, "--out", str(out), *sets]


def test_two_workers_on_postgres_one_killed(tmp_path: Path) -> None:
    storage = _storage()
    name = f"pg-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DINOKIT_CACHE": str(tmp_path / "cache")}
    logs = {tag: open(tmp_path / f"{tag}.log", "w") for tag in "ab"}
    try:
        # two "machines": separate output folders, one database
        procs = {tag: subprocess.Popen(_cmd(tmp_path / tag, name), cwd=tmp_path, env=env, stdout=logs[tag],
                                       stderr=subprocess.STDOUT) for tag in "ab"}
        victim = procs["a"]
        deadline, killed = time.monotonic() + 300, None
        while time.monotonic() < deadline and victim.poll() is None:
            try:
                trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
            except KeyError:
                trials = []
            mine = [t for t in trials if t.state == TrialState.RUNNING and "arm" in t.params
                    and t.user_attrs.get("pid") == victim.pid]
            if mine:
                killed = mine[0]
                victim.send_signal(signal.SIGKILL)  # mid-trial, no chance to clean up
                break
            time.sleep(0.2)
        victim.wait(timeout=60)
        output = lambda: "".join((tmp_path / f"{t}.log").read_text() for t in "ab")  # noqa: E731
        assert killed is not None, "worker a never held a trial:\n" + output()
        assert procs["b"].wait(timeout=600) == 0, output()

        # the survivor failed the dead trial (its pid is gone) and trained the pair again
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        pairs = {(a, s) for a in ("full", "no-lft") for s in (42, 43)}
        done = [(t.params["arm"], t.params["seed"]) for t in trials if t.state == TrialState.COMPLETE]
        assert sorted(done) == sorted(pairs), output()  # each pair exactly once, none lost
        dead = trials[killed.number]
        assert dead.state == TrialState.FAIL and "is gone" in dead.user_attrs["error"]
        assert len({t.user_attrs["run_dir"] for t in trials if t.state == TrialState.COMPLETE}) == len(pairs)
        assert all(len(t.user_attrs["history"]) == 2 for t in trials if t.state == TrialState.COMPLETE)

        # a rerun of the killed worker's command finds nothing left to train
        rerun = subprocess.run(_cmd(tmp_path / "a", name), cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=300)
        assert rerun.returncode == 0 and "0 to run" in rerun.stdout, rerun.stdout + rerun.stderr
        assert (tmp_path / "a" / "ablate" / name / "report.md").is_file()
    finally:
        for log in logs.values():
            log.close()
        for p in locals().get("procs", {}).values():
            if p.poll() is None:
                p.kill()
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass
