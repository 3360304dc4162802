"""What a trial's end means for the study, with stand-in trainers over real Optuna storage: a
diverged seed is an outcome (scored 0, counted, not retried); a deterministic failure is not
retried as if transient, a transient one is; a retried trial does not inherit its failed
original's error; the time tally is each trial's own record; arms that learned nothing get no
verdict."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest

from dinokit.ablate import study as study_mod
from dinokit.ablate.arms import leave_one_out
from dinokit.ablate.decide import NOT_LEARNED, Rule
from dinokit.ablate.report import render
from dinokit.ablate.sequential import SEED_SPACE, run_until_decided, used_seconds
from dinokit.ablate.steps import comparisons
from dinokit.config import load_preset
from dinokit.errors import DataError
from dinokit.studies.trials import trial_seconds
from dinokit.training.trainer import Diverged
from tests.standin_result import StandInResult as _Result


def _train(cfg: Any, on_epoch: Any = None, ap50: tuple[float, float] = (0.3, 0.5), **kw: Any) -> _Result:
    """Two evaluations; AP50 from ap50[0] to ap50[1] (+ a small seed effect), AP = AP50 / 2."""
    bump = 0.002 * np.random.default_rng([cfg.train.seed, 0]).normal()
    run_dir = Path(cfg.train.out) / cfg.train.name
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"step": s, "AP": (v + bump) / 2, "AP50": v + bump} for s, v in zip((1, 2), ap50)]
    for row in rows:
        if on_epoch is not None:
            on_epoch(row)
    return _Result(run_dir, {"AP": rows[-1]["AP"], "AP50": rows[-1]["AP50"]}, rows)


def _spec(tmp_path: Path, trainer: Any, removals: list[str], seeds: list[int], name: str = "s",
          **kw: Any) -> study_mod.AblationSpec:
    cfg = load_preset("tiny")
    cfg.train.steps, cfg.train.time_budget = 2, 0.0
    return study_mod.AblationSpec(name, leave_one_out(removals), seeds, cfg, tmp_path / name, trainer=trainer, **kw)


def test_a_diverged_seed_is_an_outcome_counted_as_zero_and_not_retried(tmp_path: Path) -> None:
    calls: list[str] = []

    def trainer(cfg: Any, on_epoch: Any = None, **kw: Any) -> _Result:
        calls.append(cfg.train.name)
        if not cfg.model.lft and cfg.train.seed in (2, 3):  # look-forward-once diverges on two seeds
            on_epoch({"step": 1, "AP": 0.1, "AP50": 0.2})
            exc = Diverged(7, "training diverged at step 7")
            exc.run_dir = Path(cfg.train.out) / cfg.train.name
            exc.run_dir.mkdir(parents=True, exist_ok=True)
            (exc.run_dir / "last.pt").write_bytes(b"state")
            raise exc
        return _train(cfg, on_epoch)

    spec = _spec(tmp_path, trainer, ["no-lft"], [1, 2, 3, 4])
    ledger = study_mod.run(spec, say=lambda m: None)
    assert len(ledger.done) == 8 and not ledger.failed_now  # a diverged trial is finished, not failed
    assert not (tmp_path / "s" / "train" / "trial-no-lft-s2" / "last.pt").exists()
    calls.clear()
    study_mod.run(_spec(tmp_path, trainer, ["no-lft"], [1, 2, 3, 4]), say=lambda m: None)
    assert calls == []  # the same seed would diverge again: not retried

    data, summary = render(spec.storage, "s", tmp_path / "s", explore=(1.0, None), gallery=False)
    csv = pd.read_csv(tmp_path / "s" / "trials.csv").set_index(["arm", "seed"])
    assert csv.loc[("no-lft", 2), "diverged"] == 7 and csv.loc[("no-lft", 2), "AP"] == 0.0
    assert csv.loc[("no-lft", 2), "state"] == "COMPLETE" and pd.isna(csv.loc[("no-lft", 1), "diverged"])
    assert csv.loc[("no-lft", 3), "auc"] == 0.0 and csv.loc[("no-lft", 3), "AP_tail"] == 0.0  # every measure
    assert summary.set_index("arm").loc["no-lft", "diverged"] == 2
    md = (tmp_path / "s" / "report.md").read_text()
    assert "| no-lft | 4 (2 diverged) |" in md
    d = data.decisions[0]
    assert (d.n, d.arm_diverged, d.reference_diverged) == (4, (2, 4), (0, 4))
    assert d.flags[0] == "diverged seed 2, seed 3"  # by the seeds' names (the pairs' seeds)
    assert "no-lft 2/4 [7–93%]; full 0/4 [0–60%]" in md  # Clopper-Pearson, by scipy's exact binomial interval
    assert d.mean == pytest.approx(-0.125, abs=0.01)  # (0 + -0.25 - 0.25 + 0) / 4: the zeros count


def test_a_deterministic_failure_is_not_retried_but_a_transient_one_is(tmp_path: Path) -> None:
    calls: list[str] = []
    crashed: set[int] = set()

    def trainer(cfg: Any, on_epoch: Any = None, **kw: Any) -> _Result:
        calls.append(cfg.train.name)
        if cfg.model.denoising == "dn":
            raise DataError("annotations.json: box 3 has negative width")
        if not cfg.model.lft and cfg.train.seed not in crashed:
            crashed.add(cfg.train.seed)
            raise RuntimeError("worker lost its GPU")  # transient: a retry may succeed
        return _train(cfg, on_epoch)

    def spec(**kw: Any) -> study_mod.AblationSpec:
        return _spec(tmp_path, trainer, ["no-cdn", "no-lft"], [5], **kw)

    study_mod.run(spec(), say=lambda m: None)
    assert sorted(calls) == ["trial-full-s5", "trial-no-cdn-s5", "trial-no-lft-s5"]
    calls.clear()
    ledger = study_mod.run(spec(), say=lambda m: None)
    assert calls == ["trial-no-lft-s5-retry1"]  # the transient failure is retried, the bad data is not
    assert ledger.broken == {("no-cdn", 5)}
    data, _ = render(spec().storage, "s", tmp_path / "s", gallery=False)
    md = (tmp_path / "s" / "report.md").read_text()
    assert "DataError: annotations.json: box 3 has negative width (deterministic: not retried" in md
    calls.clear()
    study_mod.run(spec(retry_failed=True), say=lambda m: None)
    assert calls == ["trial-no-cdn-s5-retry1"]  # after a fix, --retry-failed retries it

    # a sequential study stops on it with the reason, instead of retrying it every round
    seq = _spec(tmp_path, trainer, ["no-cdn"], [100 + i for i in range(SEED_SPACE)], name="seq",
                meta={"sequential": True})
    rule = Rule(1.0, "AP", tuple(comparisons(seq.arm_set)), 8)
    _, reason = run_until_decided(seq, rule, say=lambda m: None)
    assert "(no-cdn seed 100) failed deterministically (DataError: annotations.json" in reason
    assert "fix its cause and rerun with --retry-failed. Verdicts: no-cdn vs full: undecided (0 seeds)" in reason


def test_a_retried_trial_does_not_carry_its_failed_original_s_attributes(tmp_path: Path) -> None:
    """A trial whose heartbeat went stale is queued again by storage's retry callback, which
    copies the stale trial's user attributes (error, seconds, ...) into the new one."""
    def failing(cfg: Any, on_epoch: Any = None, **kw: Any) -> _Result:
        on_epoch({"step": 1, "AP": 0.1, "AP50": 0.2})
        raise RuntimeError("node lost")

    spec = _spec(tmp_path, failing, ["no-cdn"], [1])
    study_mod.run(spec, say=lambda m: None)
    study = optuna.load_study(study_name="s", storage=study_mod.open_storage(spec.storage))
    failed = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.FAIL]
    assert {t.user_attrs["error"] for t in failed} == {"RuntimeError: node lost"}
    seconds_before = used_seconds(study_mod.read_trials(spec.storage, "s")[1])
    for t in failed:  # what a stale heartbeat triggers (studies/storage.py)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(study, t)
    copies = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert len(copies) == 2 and all(t.user_attrs["error"] == "RuntimeError: node lost" for t in copies)

    spec.trainer = _train
    study_mod.run(spec, say=lambda m: None)
    study = optuna.load_study(study_name="s", storage=study_mod.open_storage(spec.storage))
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and all(t.user_attrs.get("error") is None for t in done)
    assert all(len(t.user_attrs["history"]) == 2 for t in done)  # its own curve, not the failed one's
    render(spec.storage, "s", tmp_path / "s", gallery=False)
    csv = pd.read_csv(tmp_path / "s" / "trials.csv", keep_default_na=False)
    assert set(csv[csv["state"] == "COMPLETE"]["error"]) == {""}
    assert set(csv[csv["state"] == "FAIL"]["error"]) == {"RuntimeError: node lost"}
    # the copies' inherited seconds are not counted twice: each trial counts its own
    records = study_mod.read_trials(spec.storage, "s")[1]
    assert used_seconds(records) == pytest.approx(
        seconds_before + sum(trial_seconds(t.user_attrs, t.number) for t in done))


def killed_in_the_middle(cfg: Any, on_epoch: Any = None, **kw: Any) -> _Result:
    """A spawned worker's trainer (importable by reference): one evaluation after a second, then
    the no-cdn trial's worker is killed outright (no handler runs), as by the OOM killer."""
    time.sleep(1.0)
    on_epoch({"step": 1, "AP": 0.1, "AP50": 0.2})
    if cfg.model.denoising == "dn":
        os.kill(os.getpid(), signal.SIGKILL)
    return _train(cfg, on_epoch)


@pytest.mark.slow  # two spawned workers
def test_the_time_tally_is_each_trial_s_own_record_and_survives_a_killed_worker(tmp_path: Path) -> None:
    spec = _spec(tmp_path, killed_in_the_middle, ["no-cdn"], [1])
    study_mod.run(spec, jobs=2, say=lambda m: None)
    records = study_mod.read_trials(spec.storage, "s")[1]
    killed = [r for r in records if r["arm"] == "no-cdn"]
    assert len(killed) == 1 and killed[0]["state"] != "COMPLETE"
    assert trial_seconds(killed[0]["attrs"], killed[0]["trial"]) >= 1.0  # recorded at its evaluation
    first = used_seconds(records)
    assert first >= 2.0 and first == pytest.approx(sum(trial_seconds(r["attrs"], r["trial"]) for r in records))
    # another process (another machine on a shared storage) retries it: its time adds, nothing is overwritten
    spec.trainer = _train
    study_mod.run(spec, say=lambda m: None)
    after = study_mod.read_trials(spec.storage, "s")[1]
    assert len(after) == 3 and used_seconds(after) > first
    assert {r["trial"]: trial_seconds(r["attrs"], r["trial"]) for r in after if r["trial"] in
            {k["trial"] for k in records}} == {r["trial"]: trial_seconds(r["attrs"], r["trial"]) for r in records}


def test_arms_that_learned_nothing_get_no_verdict_with_a_budget_estimate(tmp_path: Path) -> None:
    """Both arms at AP50 ~1-2 after the budget: 'no effect' would be true of the numbers and
    meaningless; the study stops at its first look with no verdict and says what budget to try."""
    def flat(cfg: Any, on_epoch: Any = None, **kw: Any) -> _Result:
        return _train(cfg, on_epoch, ap50=(0.01, 0.02))

    spec = _spec(tmp_path, flat, ["no-cdn"], [42 + i for i in range(SEED_SPACE)], meta={"sequential": True})
    rule = Rule(1.0, "AP", tuple(comparisons(spec.arm_set)), 8)
    decisions, reason = run_until_decided(spec, rule, say=lambda m: None)
    assert [d.verdict for d in decisions] == [NOT_LEARNED] and decisions[0].n == rule.first_look
    assert reason == ("no comparison can be decided: the arms did not learn at this budget. Verdicts: no-cdn vs "
                      "full: no verdict: the arms did not learn at this budget (4 seeds)")
    render(spec.storage, "s", tmp_path / "s", reason=reason, gallery=False)
    md = (tmp_path / "s" / "report.md").read_text()
    assert "| no-cdn vs full | no verdict: the arms did not learn at this budget | 4 |" in md
    # a straight line through AP50 1 -> 2 points over steps 1 -> 2 reaches 5 points at step 5
    assert "AP50 5 needs about 5 steps" in md


def test_one_arm_that_learned_keeps_its_verdict(tmp_path: Path) -> None:
    """No denoising learning nothing while the full model learns is an effect, not a non-answer."""
    def trainer(cfg: Any, on_epoch: Any = None, **kw: Any) -> _Result:
        return _train(cfg, on_epoch, ap50=(0.01, 0.02) if cfg.model.denoising == "none" else (0.2, 0.5))

    spec = _spec(tmp_path, trainer, ["no-dn"], [42 + i for i in range(SEED_SPACE)], meta={"sequential": True})
    decisions, reason = run_until_decided(spec, Rule(1.0, "AP", tuple(comparisons(spec.arm_set)), 8),
                                          say=lambda m: None)
    assert [d.verdict for d in decisions] == ["hurts"] and reason.startswith("every comparison has its verdict")
