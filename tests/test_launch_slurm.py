"""`--launcher slurm` on a real one-node Slurm cluster (tests/slurm_cluster.py) with the study in
PostgreSQL: a 2-arm x 2-seed ablation trained by two Slurm jobs, each pair exactly once; a job
cancelled mid-trial, its pair finished by the other job or a rerun; `train` as one job of two
DDP processes.

Needs Debian's slurm-wlm and munge, root (or sudo) to start the daemons, and a PostgreSQL URL in
DINOKIT_TEST_POSTGRES. Without them the tests skip with the reason; `.ci/run` sets
DINOKIT_REQUIRE_SLURM=1, and then a missing piece is a failure (tests/services.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from tests import slurm_cluster
from tests.services import needs, unavailable
from tests.test_ablate_postgres import SMALL, URL  # the same tiny trials and the same server

pytestmark = [pytest.mark.slow, needs("SLURM")]  # the cluster fixture tells whether it can run
ROOT = Path(__file__).resolve().parents[1]
PAIRS = {(a, s) for a in ("full", "no-lft") for s in (42, 43)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slurm_cluster.Cluster]:
    """The one-node cluster, started for these tests and stopped after them."""
    if not URL:
        unavailable("SLURM", "no PostgreSQL server for the study: set DINOKIT_TEST_POSTGRES=postgresql://user:pass@host/db")
    reason = slurm_cluster.missing()
    if reason:
        unavailable("SLURM", reason)
    folder = tmp_path_factory.mktemp("slurm")
    os.chmod(folder, 0o755)  # the daemons run as root, the jobs as this user
    try:
        cluster = slurm_cluster.start(folder)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        unavailable("SLURM", f"the one-node Slurm cluster did not start: {exc}")
    yield cluster
    slurm_cluster.stop(cluster)


def _env(cluster: slurm_cluster.Cluster, tmp: Path) -> dict[str, str]:
    return {**cluster.env(), "PYTHONPATH": str(ROOT), "DINOKIT_CACHE": str(tmp / "cache")}


def _ablate(out: Path, name: str, *extra: str, steps: int = 4) -> list[str]:
    sets = [x for s in SMALL for x in ("--set", s)]
    return [sys.executable, "-m", "dinokit", "ablate", "--no-lft", "--seeds", "2", "--steps", str(steps),
            "--eval-every", str(steps // 2), "--name", name, "--storage", URL, "--out", str(out), "--launcher", "slurm", "--jobs", "2",
            "--time", "10", *extra, *sets]


def _jobs(stdout: str) -> list[str]:
    found = re.search(r"submitted 2 Slurm job\(s\): (\d+) (\d+)", stdout)
    assert found, stdout
    return list(found.groups())


def _trials(name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=URL).get_trials()


def _completed(name: str) -> Counter:
    return Counter((t.params["arm"], t.params["seed"]) for t in _trials(name) if t.state == TrialState.COMPLETE)


def _cleanup(name: str) -> None:
    try:
        optuna.delete_study(study_name=name, storage=URL)
    except KeyError:
        pass


def test_ablation_on_slurm_trains_every_pair_once(cluster: slurm_cluster.Cluster, tmp_path: Path) -> None:
    name = f"slurm-{uuid.uuid4().hex[:8]}"
    try:
        r = subprocess.run(_ablate(tmp_path, name, "--wait"), cwd=tmp_path, env=_env(cluster, tmp_path),
                           capture_output=True, text=True, timeout=900)
        print(r.stdout)  # the job ids and the study table, for the record (pytest -s)
        assert r.returncode == 0, r.stdout + r.stderr
        jobs = _jobs(r.stdout)
        assert f"jobs ended: {jobs[0]} COMPLETED, {jobs[1]} COMPLETED" in r.stdout
        assert "4 finished trials" in r.stdout and "no-lft" in r.stdout  # the report's table
        done = [t for t in _trials(name) if t.state == TrialState.COMPLETE]
        for t in done:
            print(f"trial {t.number}: {t.params['arm']} seed {t.params['seed']} trained by Slurm job {t.user_attrs['slurm_job']}")
        assert Counter((t.params["arm"], t.params["seed"]) for t in done) == Counter(PAIRS)  # each exactly once
        assert {t.user_attrs["slurm_job"] for t in done} <= set(jobs)  # trained inside the submitted jobs
        assert all(len(t.user_attrs["history"]) == 2 for t in done)
        logs = tmp_path / "ablate" / name / "slurm"
        for job in jobs:  # the job logs live under the run folder and show this worktree's dinokit at work
            text = (logs / f"{job}_0_log.out").read_text()
            assert f"[slurm job {job} on {cluster.node}]" in text
        assert (tmp_path / "ablate" / name / "report.md").is_file()
    finally:
        _cleanup(name)


def test_cancelled_job_trial_is_finished_by_the_other_job_or_a_rerun(cluster: slurm_cluster.Cluster,
                                                                      tmp_path: Path) -> None:
    name = f"slurm-cancel-{uuid.uuid4().hex[:8]}"
    env = _env(cluster, tmp_path)
    try:
        r = subprocess.run(_ablate(tmp_path, name, steps=12), cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)  # longer trials: the cancel lands mid-trial
        assert r.returncode == 0, r.stdout + r.stderr  # returns once submitted
        jobs = _jobs(r.stdout)
        assert f"progress: dinokit ablate report {name}" in r.stdout and "cancel: scancel" in r.stdout
        victim, deadline, cancelled = jobs[0], time.monotonic() + 300, None
        while time.monotonic() < deadline and cancelled is None:
            try:
                running = [t for t in _trials(name) if t.state == TrialState.RUNNING and "seed" in t.params
                           and t.user_attrs.get("slurm_job") == victim]  # its pair chosen (arm, then seed)
            except KeyError:
                running = []
            if running:
                cancelled = running[0]
                subprocess.run(["scancel", victim], env=env, check=True)  # mid-trial
            time.sleep(0.2)
        assert cancelled is not None, f"job {victim} never held a trial"
        from dinokit.studies.slurm import wait

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", str(cluster.conf))
            ended = wait(jobs, poll_s=1)
        assert ended[victim] == "CANCELLED", ended
        pair = (cancelled.params["arm"], cancelled.params["seed"])
        reran = None
        if _completed(name) != Counter(PAIRS):  # the other job had finished: a rerun takes the pair over
            rerun = subprocess.run(_ablate(tmp_path, name, "--wait", steps=12), cwd=tmp_path, env=env, capture_output=True,
                                   text=True, timeout=600)
            assert rerun.returncode == 0, rerun.stdout + rerun.stderr
            reran = _jobs(rerun.stdout)
        trials = _trials(name)
        assert trials[cancelled.number].state == TrialState.FAIL, trials[cancelled.number].user_attrs
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        assert Counter((t.params["arm"], t.params["seed"]) for t in done) == Counter(PAIRS)  # once each
        finisher = next(t for t in done if (t.params["arm"], t.params["seed"]) == pair)
        assert finisher.user_attrs["slurm_job"] != victim
        assert finisher.user_attrs["slurm_job"] in (reran or [jobs[1]])
        print(f"cancelled job {victim} in trial {cancelled.number} {pair}; finished by job "
              f"{finisher.user_attrs['slurm_job']} ({'a rerun' if reran else 'the other job'})")
    finally:
        _cleanup(name)


def test_train_on_slurm_is_one_ddp_job(cluster: slurm_cluster.Cluster, tmp_path: Path) -> None:
    # two CPU processes (sbatch --ntasks-per-node=2; on GPUs --gpus-per-node sets it), batches of 2
    # over 8 images: 2 steps per epoch per process, as tests/test_train_distributed.py trains
    sets = [x for s in SMALL + ["train.batch_size=2"] for x in ("--set", s)]
    cmd = [sys.executable, "-m", "dinokit", "train", "--steps", "3", "--out", str(tmp_path / "runs"), "--name", "ddp",
           "--launcher", "slurm", "--slurm-arg", "ntasks-per-node=2", "--time", "10", "--wait", *sets]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(cluster, tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    job = re.search(r"submitted Slurm job (\d+)", r.stdout).group(1)  # type: ignore[union-attr]
    log = (tmp_path / "runs" / "train" / "slurm" / f"{job}_0_log.out").read_text()
    assert "2 process(es), cpu" in log and "done: best AP" in r.stdout, log
    assert (tmp_path / "runs" / "train" / "ddp" / "best.pt").is_file()
