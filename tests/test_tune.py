"""`dinokit tune`: pruning stops a poor trial, resume trains only missing trials, bad space files
are refused with one line, and a TrialPruned raised from the trainer's callback ends a real run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml

from dinokit.config import apply_overrides, load_preset
from dinokit.errors import DinokitError
from dinokit.tune import report as report_mod
from dinokit.tune import search
from dinokit.tune.space import SpaceError, load_space, parse_space
from tests.cli_helpers import run_cli

SMALL = [
    "data.shapes_train=8", "data.shapes_val=4", "data.image_size=64", "data.min_size=64",
    "model.backbone=mobilenet_v3_small", "model.enc_layers=1", "model.dec_layers=2",
    "model.num_queries=20", "model.dn_number=6", "train.batch_size=4", "train.threads=1",
    "train.eval_every_steps=2",
]
SPACE = {"metric": "AP50", "pruner": "median",
         "params": {"train.lr": {"low": 1e-4, "high": 1e-3, "log": True}, "loss.cls": {"choices": ["focal", "vfl"]}}}


class FakeTrainer:
    """Reports AP50 0.5, 0.6, then 0.1 (one row per evaluation, 4 evaluations) for trials 1, 2, 3;
    records how many evaluations each trial reached. Stands in for the trainer so that the
    pruning decision is known in advance; the real trainer is covered below."""

    def __init__(self, out: Path) -> None:
        self.out, self.calls, self.reached = out, 0, []

    def __call__(self, cfg: Any, progress: bool, on_epoch: Any) -> Any:
        ap = [0.5, 0.6, 0.1][min(self.calls, 2)]
        self.calls += 1
        self.reached.append(0)
        history = []
        for step in (2, 4, 6, 8):
            row = {"step": step, "AP": ap / 2, "AP50": ap}
            history.append(row)
            self.reached[-1] += 1
            on_epoch(row)
        run_dir = Path(cfg.train.out) / cfg.train.name
        run_dir.mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(run_dir=run_dir, history=history, interrupted=False)


def fake_train(cfg: Any, progress: bool, on_epoch: Any) -> Any:
    """An importable stand-in for worker processes: AP50 grows with the learning rate. A trial
    waits (up to a minute) until two worker processes have each started one, so that one quick
    worker cannot take every trial before the other has imported torch."""
    started = Path(cfg.train.out) / "started"
    started.mkdir(parents=True, exist_ok=True)
    (started / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    run_dir = Path(cfg.train.out) / "train" / cfg.train.name
    run_dir.mkdir(parents=True)  # fails if two trials share a run folder
    row = {"step": 2, "AP": cfg.train.lr, "AP50": 100 * cfg.train.lr}
    on_epoch(row)
    return SimpleNamespace(run_dir=run_dir, history=[row], interrupted=False)


def _spec(tmp_path: Path, trials: int, trainer: Any, steps: int = 8) -> search.TuneSpec:
    cfg = apply_overrides(load_preset("tiny"), SMALL)
    cfg.train.steps, cfg.train.time_budget = steps, 0.0
    return search.TuneSpec("t", parse_space(SPACE, "space"), cfg, tmp_path / "tune" / "t", trials, trainer=trainer)


def test_three_trials_one_pruned_and_resume(tmp_path: Path) -> None:
    fake = FakeTrainer(tmp_path)
    study = search.run(_spec(tmp_path, 3, fake), say=lambda m: None)
    states = [t.state for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    assert fake.reached == [4, 4, 1]  # the third trial stopped at its first evaluation
    # resume: the three trials count, nothing is trained again; one more is trained on request
    study = search.run(_spec(tmp_path, 3, fake), say=lambda m: None)
    assert fake.calls == 3 and len(study.trials) == 3
    search.run(_spec(tmp_path, 4, fake), say=lambda m: None)
    assert fake.calls == 4
    table, summary = report_mod.render(study, _spec(tmp_path, 3, fake).base, tmp_path / "report")
    assert list(table["trial"])[:2] == [1, 0] and summary["best_value"] == pytest.approx(0.6)
    best = yaml.safe_load((tmp_path / "report" / "best.yaml").read_text())
    assert best["train"]["lr"] == pytest.approx(study.best_params["train.lr"])
    assert (tmp_path / "report" / "history.png").is_file() and (tmp_path / "report" / "report.md").is_file()


def test_prune_after_keeps_early_evaluations_from_stopping_a_trial(tmp_path: Path) -> None:
    fake = FakeTrainer(tmp_path)
    spec = _spec(tmp_path, 3, fake)
    spec.space = parse_space({**SPACE, "prune_after": 6}, "space")
    study = search.run(spec, say=lambda m: None)
    assert [t.state for t in sorted(study.trials, key=lambda t: t.number)][-1] == optuna.trial.TrialState.PRUNED
    assert fake.reached == [4, 4, 3]  # the poor third trial ran through steps 2 and 4, stopped at 6
    assert "prune_after" not in parse_space(SPACE, "space").to_dict()  # older stored studies still match


def test_two_worker_processes_share_the_study(tmp_path: Path) -> None:
    spec = _spec(tmp_path, 4, "tests.test_tune:fake_train")
    study = search.run(spec, jobs=2, say=lambda m: None)
    counted = search.finished(study)
    assert 4 <= counted <= 5  # a worker may start a trial while the other finishes the 4th
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert len(pids) == 2 and os.getpid() not in pids  # two spawned workers, not this process
    trained = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # pruned: trained, then stopped
    for pid in pids:  # each worker trained its share (the median pruner may stop a worker's first trial)
        assert any(t.user_attrs["pid"] == pid and t.state in trained for t in study.trials)
    assert len(list((tmp_path / "tune" / "t" / "train").iterdir())) == len(study.trials)


def test_rerun_with_another_space_is_refused(tmp_path: Path) -> None:
    search.run(_spec(tmp_path, 1, FakeTrainer(tmp_path)), say=lambda m: None)
    other = _spec(tmp_path, 1, FakeTrainer(tmp_path))
    other.space = parse_space({**SPACE, "params": {"train.lr": {"low": 1e-4, "high": 2e-3}}}, "space")
    with pytest.raises(DinokitError, match="another space"):
        search.run(other, say=lambda m: None)


@pytest.mark.parametrize("body,message", [
    ("params: {}", "at least one"),
    ("params: {train.lr: {low: 1e-3, high: 1e-4}}", "must be below"),
    ("params: {train.lr: {low: 0, high: 1e-3, log: true}}", "log range"),
    ("params: {train.nope: {choices: [1]}}", "unknown option 'train.nope'"),
    ("params: {train.warmup_steps: {low: 0.5, high: 2.5}}", "must be an integer"),
    ("params: {loss.cls: {choices: [focal, dice]}}", "loss.cls must be one of"),
    ("metric: loss\nparams: {train.lr: {choices: [1e-3]}}", "metric must be"),
    ("params: {train.lr: {low: 1, high: 2, step: 1}}", "unknown key 'step'"),
    ("params: [", "not valid YAML"),
    ("prune_after: -1\nparams: {train.lr: {choices: [1e-3]}}", "prune_after must be"),
    ("pruner: hyperband\nprune_after: 100\nparams: {train.lr: {choices: [1e-3]}}", "median pruner only"),
])
def test_invalid_space_files_are_refused_with_one_line(tmp_path: Path, body: str, message: str, capsys) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(body)
    code = run_cli(["tune", "--space", str(path), "--steps", "2", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "tune").exists() or not any((tmp_path / "tune").rglob("trial-*"))


@pytest.mark.parametrize("name", ["tune_tiny", "tune_tiny_recipe"])
def test_shipped_space_files_are_valid(name: str) -> None:
    from dinokit.tune.space import check_space

    space = load_space(name)
    check_space(space, load_preset("tiny"))


def test_trial_pruned_from_the_callback_stops_a_real_run(tmp_path: Path) -> None:
    """The real trainer: an evaluation callback that raises TrialPruned ends training there."""
    from dinokit.training.trainer import train

    cfg = apply_overrides(load_preset("tiny"), SMALL)
    cfg.train.steps, cfg.train.time_budget, cfg.train.out = 8, 0.0, str(tmp_path)
    seen = []

    def on_epoch(row: dict[str, Any]) -> None:
        seen.append(row["step"])
        raise optuna.TrialPruned("poor")

    with pytest.raises(optuna.TrialPruned):
        train(cfg, progress=False, on_epoch=on_epoch)
    assert seen == [2]
    assert len((next((tmp_path / "train").iterdir()) / "metrics.csv").read_text().splitlines()) == 2


@pytest.mark.slow
def test_cli_tune_with_real_training(tmp_path: Path, capsys) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"params": {"train.lr": {"low": 1e-4, "high": 1e-3, "log": True}}}))
    sets = [x for s in SMALL for x in ("--set", s)]
    args = ["tune", "--space", str(space), "--trials", "2", "--steps", "2", "--out", str(tmp_path), *sets]
    code = run_cli(args)
    assert code == 0, capsys.readouterr().err
    folder = tmp_path / "tune" / "space"
    assert sorted(p.name for p in folder.glob("train/trial-*")) == ["trial-0", "trial-1"]
    import pandas as pd

    trials = pd.read_csv(folder / "trials.csv")  # both trials, their sampled lr inside the space
    assert sorted(trials["trial"]) == [0, 1] and trials["train.lr"].between(1e-4, 1e-3).all()
    best = yaml.safe_load((folder / "best.yaml").read_text())  # a ready --config of a best trial
    top = trials[trials["value"] == trials["value"].max()]
    assert any(best["train"]["lr"] == pytest.approx(lr) for lr in top["train.lr"])
    assert best["model"]["backbone"] == "mobilenet_v3_small"  # the base config, not the preset's
    capsys.readouterr()
    code = run_cli(args)  # resume: nothing left to train
    assert code == 0 and "2 done" in capsys.readouterr().out and len(list(folder.glob("train/trial-*"))) == 2


# --------------------------------------------------------------------------- issue 24 (items 2, 10, 16)


class PeakTrainer:
    """Trial 0 peaks once (0.9) and ends low (0.2); trial 1 holds 0.5 to the end: ranked by its
    single best evaluation trial 0 would win, by the last evaluations trial 1 does."""

    curves = ([0.1, 0.9, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5])

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, cfg: Any, progress: bool, on_epoch: Any) -> Any:
        curve = self.curves[min(self.calls, 1)]
        self.calls += 1
        history = []
        for step, ap in zip((2, 4, 6, 8), curve):
            history.append({"step": step, "AP": ap / 2, "AP50": ap})
            on_epoch(history[-1])
        run_dir = Path(cfg.train.out) / "train" / cfg.train.name
        run_dir.mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(run_dir=run_dir, history=history, interrupted=False)


def test_trials_are_ranked_by_their_last_evaluations_not_a_peak(tmp_path: Path) -> None:
    study = search.run(_spec(tmp_path, 2, PeakTrainer()), say=lambda m: None)
    values = {t.number: t.value for t in study.trials}
    assert values[0] == pytest.approx((0.9 + 0.2 + 0.2) / 3) and values[1] == pytest.approx(0.5)
    table, summary = report_mod.render(study, _spec(tmp_path, 2, PeakTrainer()).base, tmp_path / "report")
    assert summary["best_trial"] == 1 and list(table["trial"]) == [1, 0]
    assert search.rank_value([0.3]) == 0.3 and search.rank_value([]) == 0.0  # fewer evaluations: all of them


def test_tune_outputs_are_written_atomically(tmp_path: Path, monkeypatch) -> None:
    """Every report file goes through dinokit/files.py (temp file beside it, then os.replace)."""
    import dinokit.files

    study = search.run(_spec(tmp_path, 2, FakeTrainer(tmp_path)), say=lambda m: None)
    replaced: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(dinokit.files.os, "replace", lambda src, dst: (replaced.append(Path(dst).name),
                                                                        real_replace(src, dst)))
    report_mod.render(study, _spec(tmp_path, 2, FakeTrainer(tmp_path)).base, tmp_path / "report")
    assert {"best.yaml", "trials.csv", "report.md", "history.png", "curves.png"} <= set(replaced), replaced
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.startswith(".")]  # no temp file left


def test_pruned_real_trial_keeps_no_resume_state_and_no_resume_hint(tmp_path: Path) -> None:
    """The real trainer under a pruner that stops every trial at its first evaluation: the trial
    is PRUNED (not failed), its folder holds no last.pt and nothing tells the user to resume it."""
    cfg = apply_overrides(load_preset("tiny"), SMALL)
    cfg.train.steps, cfg.train.time_budget = 8, 0.0
    spec = search.TuneSpec("p", parse_space(SPACE, "space"), cfg, tmp_path / "tune" / "p", 1)
    said: list[str] = []
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    study.optimize(search.Objective(spec, threads=1, progress=False, say=said.append), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and list(trial.intermediate_values) == [2]
    run_dir = tmp_path / "tune" / "p" / "train" / "trial-0"
    assert (run_dir / "metrics.csv").is_file() and not (run_dir / "last.pt").exists()
    assert any("pruned" in m for m in said) and not any("resume" in m for m in said), said


def test_tune_trials_are_not_step_seeded(tmp_path: Path, monkeypatch, capsys) -> None:
    """`step_seeded` pairs an ablation's arms; tune's trials and best.yaml keep the preset's value."""
    import dinokit.training.trainer

    seen: list[Any] = []

    def fake(cfg: Any, progress: bool, on_epoch: Any) -> Any:
        seen.append(cfg)
        return PeakTrainer()(cfg, progress, on_epoch)

    monkeypatch.setattr(dinokit.training.trainer, "train", fake)
    space = tmp_path / "lr.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    sets = [x for s in SMALL for x in ("--set", s)]
    assert run_cli(["tune", "--space", str(space), "--trials", "1", "--steps", "8", "--out", str(tmp_path),
                    *sets]) == 0, capsys.readouterr().err
    assert len(seen) == 1 and seen[0].train.step_seeded is False
    best = yaml.safe_load((tmp_path / "tune" / "lr" / "best.yaml").read_text())
    assert best["train"]["step_seeded"] is False
    from dinokit.ablate.cli import base_config

    assert base_config("tiny", None, [], 8, None).train.step_seeded is True  # ablate's arms stay paired
