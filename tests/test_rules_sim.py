"""The rules' error rates by simulation, on the shapes each claims and on those it does not.

Studies of paired differences (AP points) looked at after every seed up to a cap of 20, margin
1 AP, alpha 5% per comparison, sd 1, 2, 4 and true effects 0, 0.5, 1, 1.5, 2 x margin
(dinokit/ablate/rules/simulate.py). A rule passes a cell when its count of wrong verdicts is no
more than the 99.99% point of Binomial(reps, alpha): the simulation's slack, so a rule whose true
rate is alpha fails a cell with probability 1e-4 (the draws are fixed, so a pass is repeatable).
The full table, with seeds, is benchmarks/rules_sim.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dinokit.ablate import rules
from dinokit.ablate.rules import check
from dinokit.ablate.rules.simulate import SHAPES, draw, run_cell

ALPHA, MARGIN, CAP, BOUND = 0.05, 1.0, 20, 100.0
SDS, EFFECTS = (1.0, 2.0, 4.0), (0.0, 0.5, 1.0, 1.5, 2.0)
REPS = 2000
SLACK = int(stats.binom.ppf(1 - 1e-4, REPS, ALPHA))  # the most wrong verdicts a rule at alpha shows, w.p. 1 - 1e-4


def _cells(rule: str, shape: str, seed: int, sds=SDS, effects=EFFECTS, bound: float = BOUND, reps: int = REPS):
    return [run_cell(rule, shape, e * MARGIN, sd, margin=MARGIN, alpha=ALPHA, cap=CAP, reps=reps, seed=seed,
                     bound=bound) for sd in sds for e in effects]


@pytest.mark.parametrize("rule", ["groupseq", "tmixture"])
def test_t_rules_hold_alpha_on_normal_differences(rule: str) -> None:
    for c in _cells(rule, "normal", seed=1):
        assert c.wrong_sign <= SLACK, c
        assert c.wrong_same <= SLACK, c
    # and they are not vacuous: a difference of 2 x margin at sd 1 is called helps nearly always
    big = run_cell(rule, "normal", 2 * MARGIN, 1.0, margin=MARGIN, alpha=ALPHA, cap=CAP, reps=REPS, seed=1, bound=BOUND)
    assert big.correct / REPS > 0.99


@pytest.mark.parametrize("shape", SHAPES)
def test_bounded_holds_alpha_on_every_shape(shape: str) -> None:
    """Valid for any distribution within the bound, and (against 100 AP) decisive for none of these."""
    cells = _cells("bounded", shape, seed=2)
    for c in cells:
        assert c.wrong_sign <= SLACK and c.wrong_same <= SLACK, c
    assert sum(c.undecided for c in cells) / (len(cells) * REPS) > 0.99


def _rare_loss(effect: float, reps: int, seed: int) -> np.ndarray:
    """Within +-10: most seeds gain about 1 point, one in ten loses 9 (a diverged run), mean `effect`."""
    rng = np.random.default_rng(seed)
    d = np.where(rng.random((reps, CAP)) < 0.1, -9.0, 1.0) + rng.normal(0, 0.3, (reps, CAP)) + effect
    return np.clip(d, -10, 10)


def test_bounded_holds_alpha_where_it_decides_and_the_t_rules_do_not() -> None:
    """Against a bound of 10 AP the bounded rule does decide; on rare large losses (mean 0) the t
    rules call 'helps' from the seeds that did not lose, and the bounded rule stays within alpha."""
    reps = 4000
    slack = stats.binom.ppf(1 - 1e-4, reps, ALPHA) / reps
    d = _rare_loss(0.0, reps, seed=3)
    wrong = {}
    for rule in ("groupseq", "tmixture", "bounded"):
        code, _ = rules.simulate_verdicts(rule, d, ALPHA, MARGIN, cap=CAP, bound=10.0)
        wrong[rule] = np.isin(code, [rules.HELPS, rules.HURTS]).mean()
    assert wrong["bounded"] <= slack
    assert wrong["groupseq"] > 0.3 and wrong["tmixture"] > 0.3, wrong
    for shape in SHAPES:  # sd 1 against 10 AP: the clip moves no mean by more than 0.01 AP
        for c in _cells("bounded", shape, seed=4, sds=(1.0,), effects=(0.0, 2.0, 4.0), bound=10.0):
            assert c.wrong_sign <= SLACK and c.wrong_same <= SLACK, c
        decisive = run_cell("bounded", shape, 4.0, 1.0, margin=MARGIN, alpha=ALPHA, cap=CAP, reps=REPS, seed=4,
                            bound=10.0)
        assert decisive.correct / REPS > 0.5, decisive  # the test above is not vacuous


@pytest.mark.parametrize("shape,least", [("lognormal", 0.15), ("diverge", 0.08)])
def test_t_rules_are_not_valid_on_skewed_or_divergent_differences(shape: str, least: float) -> None:
    """What the README means by 'not valid there': at no true difference, the t rules call a sign
    far more often than alpha (the bounded rule: never)."""
    for rule in ("groupseq", "tmixture"):
        worst = max(c.wrong_sign for c in _cells(rule, shape, seed=5, effects=(0.0,))) / REPS
        assert worst > least > ALPHA, (rule, worst)


def test_groupseq_spends_fewer_seeds_than_the_tmixture() -> None:
    """Normal data, effects 1-2 x margin, sd 1-3: fewer seeds used and more correct verdicts by the
    cap (as many where both decide all) in every cell (benchmarks/rules_sim.py has the sizes)."""
    for sd in (1.0, 2.0, 3.0):
        for e in (1.0, 1.5, 2.0):
            gs, tm = (run_cell(r, "normal", e, sd, margin=MARGIN, alpha=ALPHA, cap=CAP, reps=REPS, seed=6, bound=BOUND)
                      for r in ("groupseq", "tmixture"))
            assert gs.seeds < tm.seeds and gs.correct >= tm.correct, (gs, tm)


def test_flags_fire_on_skewed_and_divergent_data_not_on_normal() -> None:
    """assumption_flags' false-flag rate on normal data stays at 1-3% from 5 to 20 pairs; on skewed
    (lognormal) and divergent data at 10-20 pairs it fires five times as often or more."""
    reps = 4000
    rate = {}
    for shape in ("normal", "t3", "lognormal", "diverge"):
        d = draw(shape, 0.0, 2.0, reps, CAP, seed=7, bound=BOUND)
        for n in (5, 10, 20):
            skewed, outlier = check.flags_matrix(d[:, :n])
            rate[shape, n] = (skewed | outlier).mean()
    for n in (5, 10, 20):
        assert rate["normal", n] <= 0.03, rate
    for n in (10, 20):
        assert rate["lognormal", n] >= 5 * rate["normal", n] and rate["diverge", n] >= 5 * rate["normal", n], rate
    # the public function agrees with the vectorised one it wraps
    d = draw("lognormal", 0.0, 2.0, 50, 12, seed=8, bound=BOUND)
    skewed, outlier = check.flags_matrix(d)
    assert [bool(rules.assumption_flags(row)) for row in d] == list(skewed | outlier)
