"""End to end with the real trainer: resume after a kill, failures kept and retried, two
processes sharing one SQLite storage. Tiny budgets: a trial is a few optimiser steps."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from dinokit.ablate import study as study_mod
from dinokit.ablate.arms import leave_one_out
from dinokit.ablate.cli import app
from dinokit.ablate.report import render
from dinokit.config import apply_overrides, load_preset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "data.shapes_train=8", "data.shapes_val=4", "data.image_size=64", "data.min_size=64",
    "model.backbone=mobilenet_v3_small", "model.enc_layers=1", "model.dec_layers=2",
    "model.num_queries=20", "model.dn_number=6", "train.batch_size=4", "train.threads=1",
]
STEPS = 4  # two epochs of two steps: two evaluations per trial


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private dataset cache with the shapes data written once for every test here."""
    from dinokit.data.shapes import shapes_dir

    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DINOKIT_CACHE")
    os.environ["DINOKIT_CACHE"] = str(root)
    shapes_dir(_config().data)
    yield root
    if old is None:
        os.environ.pop("DINOKIT_CACHE", None)
    else:
        os.environ["DINOKIT_CACHE"] = old


def _config() -> Any:
    cfg = apply_overrides(load_preset("tiny"), SMALL)
    cfg.train.steps = STEPS
    return cfg


def _cli(out: Path, *args: str) -> list[str]:
    sets = [x for s in SMALL for x in ("--set", s)]
    return [sys.executable, "-m", "dinokit.ablate.cli", *args, "--steps", str(STEPS), "--eval-every", "2",
            "--out", str(out), *sets]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "DINOKIT_CACHE": str(cache)}


def _trials(db: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials()


def _pair(t: optuna.trial.FrozenTrial) -> tuple[str, int]:
    return t.params["arm"], t.params["seed"]


def _states(db: Path) -> tuple[int, int]:
    """(COMPLETE trials, RUNNING trials that chose their pair), read with plain sqlite."""
    con = sqlite3.connect(db, timeout=30)
    try:
        done = con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
        running = con.execute(
            "SELECT count(*) FROM trials t JOIN trial_params p ON p.trial_id = t.trial_id "
            "WHERE t.state = 'RUNNING' AND p.param_name = 'seed'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0, 0
    finally:
        con.close()
    return done, running


def _one_complete_per_pair(trials: list[optuna.trial.FrozenTrial], pairs: set[tuple[str, int]]) -> None:
    done = [_pair(t) for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(done) == sorted(pairs), "every (arm, seed) finished exactly once"


def test_resume_after_kill_trains_only_what_is_missing(tmp_path: Path, cache: Path) -> None:
    out, name = tmp_path / "runs", "no-cdn"
    folder = out / "ablate" / name
    db = folder / "study.db"
    cmd = _cli(out, "--no-cdn", "--seeds", "2")
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(cache), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists() and min(_states(db)) >= 1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: the trial stays RUNNING
        proc.wait()
    before = _trials(db, name)
    finished = {_pair(t): t.number for t in before if t.state == optuna.trial.TrialState.COMPLETE}
    killed = [t for t in before if t.state == optuna.trial.TrialState.RUNNING and "arm" in t.params]
    assert finished and len(killed) == 1
    stamps = {p: (folder / "train" / f"trial-{p[0]}-s{p[1]}" / "metrics.csv").stat().st_mtime_ns for p in finished}

    rerun = subprocess.run(cmd, cwd=tmp_path, env=_env(cache), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = _trials(db, name)
    pairs = {(a, s) for a in ("full", "no-cdn") for s in (42, 43)}
    _one_complete_per_pair(after, pairs)
    for pair, number in finished.items():  # finished trials were not trained again
        assert after[number].state == optuna.trial.TrialState.COMPLETE
        assert (folder / "train" / f"trial-{pair[0]}-s{pair[1]}" / "metrics.csv").stat().st_mtime_ns == stamps[pair]
        assert sorted(p.name for p in (folder / "train").glob(f"trial-{pair[0]}-s{pair[1]}*")) == \
            [f"trial-{pair[0]}-s{pair[1]}"]
    dead = after[killed[0].number]
    assert dead.state == optuna.trial.TrialState.FAIL and "is gone" in dead.user_attrs["error"]
    retry = [t for t in after if _pair(t) == _pair(dead) and t.state == optuna.trial.TrialState.COMPLETE][0]
    assert retry.user_attrs["run_dir"].endswith(f"trial-{dead.params['arm']}-s{dead.params['seed']}-retry1")
    assert len(retry.user_attrs["history"]) == 2 and [h["step"] for h in retry.user_attrs["history"]] == [2, 4]
    assert "0 to run" not in rerun.stdout and f"{len(finished)} done" in rerun.stdout

    csv = pd.read_csv(folder / "trials.csv")
    assert len(csv) == len(pairs) + 1 and (csv["state"] == "FAIL").sum() == 1
    assert {"queries", "denoising", "lft", "dn_draws", "neg_target", "attention", "AP", "APs"} <= set(csv.columns)
    md = (folder / "report.md").read_text()
    assert "## Failed trials" in md and "is gone" in md
    for png in ("ap.png", "convergence.png"):
        assert (folder / png).stat().st_size > 0

    # a third run has nothing left to do; `report` re-renders from storage alone
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(cache), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 to run" in again.stdout
    (folder / "report.md").unlink()
    result = CliRunner().invoke(app, ["report", name, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "full" in result.output and "no-cdn" in result.output
    assert (folder / "report.md").is_file() and len(_trials(db, name)) == len(after)


def test_failed_and_interrupted_trials_are_kept_and_retried(tmp_path: Path, cache: Path) -> None:
    from dinokit.training.trainer import train

    calls: list[str] = []

    def crashing(cfg: Any, **kw: Any) -> Any:
        calls.append(cfg.train.name)
        if cfg.model.denoising == "dn":
            raise RuntimeError("simulated crash while loading data")
        return train(cfg, **kw)

    def interrupted(cfg: Any, on_epoch: Any = None, **kw: Any) -> Any:
        calls.append(cfg.train.name)

        def ctrl_c(row: dict[str, Any]) -> None:  # Ctrl-C at the first evaluation
            raise KeyboardInterrupt

        return train(cfg, on_epoch=ctrl_c, **kw)

    def real(cfg: Any, **kw: Any) -> Any:
        calls.append(cfg.train.name)
        return train(cfg, **kw)

    def spec(trainer: Any) -> study_mod.AblationSpec:
        return study_mod.AblationSpec("flaky", leave_one_out(["no-cdn"]), [5], _config(), tmp_path / "flaky",
                                      trainer=trainer)

    ledger = study_mod.run(spec(crashing), progress=False)
    assert sorted(calls) == ["trial-full-s5", "trial-no-cdn-s5"]  # the failure is not retried in-run
    assert ledger.done == {("full", 5)} and ledger.failed_now == {("no-cdn", 5)}
    data, summary = render(spec(real).storage, "flaky", tmp_path / "flaky")
    fail = data.trials[data.trials["state"] == "FAIL"]
    assert list(fail["error"]) == ["RuntimeError: simulated crash while loading data"]
    row = summary.set_index("arm").loc["no-cdn"]
    assert row["n"] == 0 and row["failed"] == 1
    md = (tmp_path / "flaky" / "report.md").read_text()
    assert "simulated crash while loading data" in md and "no-cdn/s5" in md.split("## Not finished")[1]

    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        study_mod.run(spec(interrupted), progress=False)
    assert calls == ["trial-no-cdn-s5-retry1"]  # the finished arm is not trained again

    calls.clear()
    ledger = study_mod.run(spec(real), progress=False)
    assert calls == ["trial-no-cdn-s5-retry2"]
    assert ledger.done == {("full", 5), ("no-cdn", 5)} and not ledger.failed_now
    data, summary = render(spec(real).storage, "flaky", tmp_path / "flaky")
    errors = list(data.trials.sort_values("trial").query("state == 'FAIL'")["error"])
    assert errors[0].startswith("RuntimeError") and errors[1].startswith("interrupted")
    assert list(summary["n"]) == [1, 1] and list(summary["failed"]) == [0, 0]  # every seed has its result
    assert list(summary["rerun"]) == [0, 2]  # the crash and the interrupt, both replaced by the retry
    assert len(pd.read_csv(tmp_path / "flaky" / "trials.csv")) == 4  # failures stay in the record
    assert len(data.history[data.history["arm"] == "no-cdn"]) == 2  # curve of the finished retry only


def test_two_processes_share_one_storage_without_double_training(tmp_path: Path, cache: Path) -> None:
    out, name = tmp_path / "runs", "shared"
    folder = out / "ablate" / name
    # process A has two spawned workers (--jobs 2), process B one: three workers, four trials
    cmd_a = _cli(out, "--no-lft", "--seeds", "2", "--name", name, "--jobs", "2")
    cmd_b = _cli(out, "--no-lft", "--seeds", "2", "--name", name)
    logs = [open(tmp_path / f"{tag}.log", "w") for tag in "ab"]
    procs = [subprocess.Popen(c, cwd=tmp_path, env=_env(cache), stdout=log, stderr=subprocess.STDOUT)
             for c, log in zip((cmd_a, cmd_b), logs)]
    codes = [p.wait(timeout=600) for p in procs]
    for log in logs:
        log.close()
    output = "".join((tmp_path / f"{tag}.log").read_text() for tag in "ab")
    assert codes == [0, 0], output

    trials = _trials(folder / "study.db", name)
    pairs = {(a, s) for a in ("full", "no-lft") for s in (42, 43)}
    _one_complete_per_pair(trials, pairs)
    for t in trials:  # anything else stepped aside before training; nothing failed
        assert t.state == optuna.trial.TrialState.COMPLETE or "skipped" in t.user_attrs, t
    runs = sorted(p.name for p in (folder / "train").iterdir())
    assert runs == sorted(f"trial-{a}-s{s}" for a, s in pairs)  # each trained exactly once
    # the work was shared: process B (jobs 1 trains in its own process) finished at least one
    # trial, and so did process A's spawned workers; each process records its own run id
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    by_run: dict[str, set[int]] = {}
    for t in complete:
        by_run.setdefault(t.user_attrs["run_id"], set()).add(t.user_attrs["pid"])
    assert len(by_run) == 2, output  # both processes finished trials
    b_pids = [pids for pids in by_run.values() if procs[1].pid in pids]
    assert b_pids == [{procs[1].pid}], (by_run, procs[1].pid)  # B trained its share itself
    a_pids = set.union(*(pids for pids in by_run.values() if procs[1].pid not in pids))
    assert procs[0].pid not in a_pids and len(a_pids) >= 1  # A's trials came from its workers
    assert all(t.user_attrs["params"] > 0 for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert len(pd.read_csv(folder / "trials.csv")) >= 1


def test_a_diverged_trial_is_recorded_as_an_outcome_and_not_retried(tmp_path: Path, cache: Path) -> None:
    """The real trainer with a learning rate that blows up: the trial is COMPLETE with
    'diverged at step S', scores 0, and a rerun does not train its seed again."""
    from dinokit.ablate.arms import load_study_file

    study = tmp_path / "unstable.yaml"
    study.write_text("arms:\n  - {name: full}\n  - {name: unstable, train: {lr: 1.0e+6}}\n")
    cfg = _config()
    cfg.train.steps, cfg.train.eval_every_steps = 24, 12  # divergence needs 20 bad steps in a row

    def spec() -> study_mod.AblationSpec:
        return study_mod.AblationSpec("unstable", load_study_file(study), [3], cfg, tmp_path / "unstable")

    ledger = study_mod.run(spec(), progress=False, say=lambda m: None)
    assert ledger.done == {("full", 3), ("unstable", 3)}
    trials = {_pair(t): t for t in _trials(tmp_path / "unstable" / "study.db", "unstable")}
    gone = trials[("unstable", 3)]
    assert gone.state == optuna.trial.TrialState.COMPLETE and 1 <= gone.user_attrs["diverged"] <= 5
    assert "diverged" not in trials[("full", 3)].user_attrs
    again = study_mod.run(spec(), progress=False, say=lambda m: None)
    assert again.done == ledger.done and len(_trials(tmp_path / "unstable" / "study.db", "unstable")) == 2
    data, summary = render(spec().storage, "unstable", tmp_path / "unstable", gallery=False)
    row = pd.read_csv(tmp_path / "unstable" / "trials.csv").set_index("arm").loc["unstable"]
    assert row["AP"] == 0.0 and row["diverged"] == gone.user_attrs["diverged"] and row["state"] == "COMPLETE"
    assert summary.set_index("arm").loc["unstable", "diverged"] == 1


def test_until_decided_end_to_end_the_stop_line_and_every_table_agree(tmp_path: Path, cache: Path) -> None:
    """Issue 34's command at a tiny budget with the real trainer and two workers: the arms learn
    nothing in 4 steps, and every view says so in the same words (no 'no effect' verdict)."""
    from test_ablate_verdicts import _html, _markdown, _stop_line, _terminal

    out = tmp_path / "runs"
    cmd = _cli(out, "--no-dn", "--until-decided", "--margin", "1.0", "--max-seeds", "4", "--jobs", "2",
               "--name", "tiny")
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(cache), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stop = _stop_line(proc.stdout)
    assert stop == {"no-dn vs full": ("no verdict: the arms did not learn at this budget", "4")}, proc.stdout
    assert _terminal(proc.stdout) == stop
    folder = out / "ablate" / "tiny"
    assert _markdown((folder / "report.md").read_text()) == stop
    assert _html((folder / "report.html").read_text()) == stop
