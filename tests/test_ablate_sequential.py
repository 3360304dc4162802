"""Sequential rounds over real Optuna storage with a stand-in trainer (no training): the next round
trains only what an undecided comparison needs, a cap stops the study, and a second command with
a larger cap continues it without training anything twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dinokit.ablate import study as study_mod
from dinokit.ablate.arms import leave_one_out
from dinokit.ablate.decide import HURTS, LEGACY_RHO, RHO, RULE_ATTR, UNDECIDED, Rule
from dinokit.ablate.report import render
from dinokit.ablate.sequential import SEED_SPACE, keep_rule, run_until_decided
from dinokit.ablate.steps import comparisons
from dinokit.config import load_preset
from dinokit.errors import DinokitError
from tests.standin_result import StandInResult as _Result


def _fake_trainer(cfg: Any, on_epoch: Any = None, **kw: Any) -> _Result:
    """AP of (arm, seed): a shared seed effect; no-cdn 5 points lower with little spread; no-lft
    the same as full with 1.2 points of paired spread (needs many seeds for any verdict)."""
    seed = cfg.train.seed
    shared = 0.30 + 0.03 * np.random.default_rng([seed, 0]).normal()
    if cfg.model.denoising == "dn":
        ap = shared - 0.05 + 0.004 * np.random.default_rng([seed, 1]).normal()
    elif not cfg.model.lft:
        ap = shared + 0.012 * np.random.default_rng([seed, 2]).normal()
    else:
        ap = shared
    run_dir = Path(cfg.train.out) / cfg.train.name
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"step": 1, "AP": ap - 0.1, "AP50": ap}, {"step": 2, "AP": ap, "AP50": ap + 0.2}]
    for row in rows:
        if on_epoch is not None:
            on_epoch(row)
    return _Result(run_dir, {"AP": ap, "AP50": ap + 0.2}, rows)


def _spec(tmp_path: Path) -> study_mod.AblationSpec:
    cfg = load_preset("tiny")
    cfg.train.steps, cfg.train.time_budget = 2, 0.0
    arms = leave_one_out(["no-cdn", "no-lft"])
    return study_mod.AblationSpec("seq", arms, [42 + i for i in range(SEED_SPACE)], cfg, tmp_path / "seq",
                                  meta={"sequential": True}, trainer=_fake_trainer)


def _rule(spec: study_mod.AblationSpec, max_seeds: int = 20, margin: float = 1.0, **kw: Any) -> Rule:
    """An anytime (t-mixture) rule: these tests continue studies with a larger cap."""
    return Rule(margin, "AP", tuple(comparisons(spec.arm_set)), max_seeds, **{"kind": "tmixture", **kw})


def _trained(spec: study_mod.AblationSpec) -> Counter:
    _, records = study_mod.read_trials(spec.storage, spec.name)
    return Counter((r["arm"], r["seed"]) for r in records if r["state"] == "COMPLETE")


def test_rounds_train_only_what_is_undecided_and_resume_with_a_larger_cap(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    first = _rule(spec).first_look  # two comparisons (no-cdn vs full, no-lft vs full) at 2.5% each
    assert first == 4
    decisions, reason = run_until_decided(spec, _rule(spec, first + 2), say=lambda m: None)
    verdicts = {d.arm: d for d in decisions}
    assert verdicts["no-cdn"].verdict == HURTS and verdicts["no-cdn"].decided_at == first
    assert verdicts["no-lft"].verdict == UNDECIDED and reason == (
        f"the seed cap (--max-seeds {first + 2}) is reached. Verdicts: no-cdn vs full: hurts ({first} seeds); "
        f"no-lft vs full: undecided ({first + 2} seeds)")
    trained = _trained(spec)
    assert all(n == 1 for n in trained.values())
    seeds = lambda arm: sorted(s for a, s in trained if a == arm)  # noqa: E731
    assert seeds("no-cdn") == list(range(42, 42 + first))  # decided: no more seeds
    assert seeds("full") == seeds("no-lft") == list(range(42, 42 + first + 2))

    # the same study, a larger cap: continues where it stopped, nothing trained twice
    spec = _spec(tmp_path)
    decisions, reason = run_until_decided(spec, _rule(spec, first + 4), say=lambda m: None)
    trained = _trained(spec)
    assert all(n == 1 for n in trained.values())
    assert seeds("no-cdn") == list(range(42, 42 + first))
    assert seeds("no-lft") == list(range(42, 42 + first + 4))

    # the report carries the verdicts with the study's own rule; no "not finished" for skipped arms
    data, _ = render(spec.storage, spec.name, spec.out_dir, gallery=False)
    text = (spec.out_dir / "report.md").read_text()
    assert data.rule == _rule(spec, first + 4) and data.rule.rho == RHO
    assert "## Verdicts" in text and "hurts" in text and "Not finished" not in text
    assert text.index("## Verdicts") < text.index("## Results")


def test_a_resumed_study_keeps_its_margin(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    decisions, _ = run_until_decided(spec, Rule(1.0, "AP", max_seeds=4), say=lambda m: None)  # comparisons: the arms'
    assert [d.name for d in decisions] == ["no-cdn vs full", "no-lft vs full"]
    with pytest.raises(DinokitError, match="margin"):
        run_until_decided(_spec(tmp_path), _rule(spec, 8, margin=0.5), say=lambda m: None)


def test_report_margin_on_a_fixed_seed_study(tmp_path: Path) -> None:
    """`ablate report NAME --margin` applies the rule to a finished fixed-seed study."""
    from dinokit.ablate.cli import app
    from typer.testing import CliRunner

    cfg = load_preset("tiny")
    cfg.train.steps, cfg.train.time_budget = 2, 0.0
    out = tmp_path / "runs"
    spec = study_mod.AblationSpec("fixed", leave_one_out(["no-cdn"]), list(range(42, 50)), cfg,
                                  out / "ablate" / "fixed", trainer=_fake_trainer)
    study_mod.run(spec, say=lambda m: None)
    result = CliRunner().invoke(app, ["report", "fixed", "--out", str(out), "--margin", "1.0"])
    assert result.exit_code == 0, result.output
    text = (spec.out_dir / "report.md").read_text()
    assert "## Verdicts" in text and "| no-cdn vs full | hurts |" in text
    bad = CliRunner().invoke(app, ["report", "fixed", "--out", str(out), "--margin", "-1"])
    assert bad.exit_code != 0 and "--margin" in str(bad.exception)


def test_the_time_cap_stops_a_round_between_trials(tmp_path: Path) -> None:
    """--max-hours is honoured inside a round: a trial that starts before the cap finishes, no
    trial starts after it (the first round of a study can be dozens of trials)."""
    import time

    def slow_trainer(cfg: Any, **kw: Any) -> _Result:
        time.sleep(4.0)
        return _fake_trainer(cfg, **kw)

    spec = _spec(tmp_path)
    spec.trainer = slow_trainer
    first = _rule(spec).first_look
    decisions, reason = run_until_decided(spec, _rule(spec, first + 2), say=lambda m: None, max_hours=3.0 / 3600)
    trained = _trained(spec)
    assert "time cap" in reason
    assert 1 <= sum(trained.values()) < 3 * first  # the first round (3 arms x `first` seeds) was cut
    assert all(d.verdict == UNDECIDED for d in decisions)


def test_a_study_keeps_the_rule_it_started_with() -> None:
    """A new study stores its whole rule; one stored before the rule was complete resumes under
    what it ran with (rho 1 = LEGACY_RHO, kind tmixture, alpha 5%, its own comparisons), so its
    verdicts do not change rule half-way."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    comps = (("no-cdn vs full", "no-cdn", "full"),)
    fresh = optuna.create_study()
    rule = keep_rule(fresh, Rule(1.0, "AP", comps, 12))
    assert rule.rho == RHO and fresh.user_attrs[RULE_ATTR] == {
        "margin": 1.0, "measure": "AP", "comparisons": [list(comps[0])], "max_seeds": 12, "kind": "groupseq",
        "alpha": 0.05, "rho": RHO, "first_look": 4}  # a new study: the group-sequential default
    assert keep_rule(fresh, Rule(1.0, "AP", (), 12, rho=LEGACY_RHO, alpha=0.01)) == rule  # stored wins
    old = optuna.create_study()
    old.set_user_attr(RULE_ATTR, {"margin": 1.0, "measure": "AP", "seconds": 120.0})
    legacy = [("a → b", "b", "a"), ("b → c", "c", "b")]  # a cumulative study from before `kind`
    rule = keep_rule(old, Rule(1.0, "AP", comps, 20), legacy)
    assert (rule.rho, rule.kind, rule.alpha, list(rule.comparisons)) == (LEGACY_RHO, "tmixture", 0.05, legacy)
    assert old.user_attrs[RULE_ATTR]["rho"] == LEGACY_RHO and old.user_attrs[RULE_ATTR]["first_look"] == 6


def test_a_round_an_interrupt_left_unfinished_is_completed_and_looked_at_before_a_new_seed() -> None:
    """Seeds 0-3 opened (the first look), seed 3 interrupted for two arms: the next round trains
    just those two, and opens seed 4 only in the round after."""
    from dinokit.ablate.decide import Decision
    from dinokit.ablate.sequential import next_round

    rule = Rule(1.0, "AP", (), 20)
    seeds = list(range(100, 120))
    open_ = [Decision("a vs r", "a", "r", 3, 0.0, -2.0, 2.0, UNDECIDED, 0)]
    done = {(arm, s) for arm in "ar" for s in seeds[:3]}
    wanted, target = next_round(open_, done, seeds, 4, rule, 20, 2)
    assert sorted(wanted) == [("a", 103), ("r", 103)] and target == 4
    done |= {("a", 103), ("r", 103)}
    wanted, target = next_round(open_, done, seeds, 4, rule, 20, 2)
    assert wanted == [("r", 104), ("a", 104)] and target == 5
    first_round, target = next_round(open_, set(), seeds, 0, rule, 20, 2)
    assert target == rule.first_look and len(first_round) == 2 * rule.first_look
