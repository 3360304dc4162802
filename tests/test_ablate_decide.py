"""The sequential decision rule: hand-computed intervals, verdicts, and error rates proven by
simulation (no training: thousands of synthetic studies in about a second)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dinokit.ablate.decide import (
    EQUIVALENT, HELPS, HURTS, LEGACY_RHO, NOT_LEARNED, RHO, UNDECIDED, Rule, cs_halfwidth, decide, decide_sequence, first_look,
    needed_arms, seeds_to_decide, verdict_of,
)
from dinokit.ablate.verdicts import decisions_table


def TRule(*args, **kw) -> Rule:
    """A t-mixture rule: this file checks that kind's maths and the shared verdict mechanics."""
    return Rule(*args, **{"kind": "tmixture", **kw})


def _first(alpha: float, rho: float = RHO) -> int:
    """The first look of a one-comparison t-mixture rule at `alpha`."""
    return first_look(TRule(comparisons=(("b vs a", "b", "a"),), alpha=alpha, rho=rho))


def _martingale(d: np.ndarray, mu: float, alpha_rho: tuple[float, float] = (0.05, 1.0)) -> float:
    """M_n(mu) straight from its definition (Lai's t-mixture), not from the closed form."""
    rho = alpha_rho[1]
    n, y = len(d), d - mu
    s, v = y.sum(), (y * y).sum()
    return math.sqrt(rho / (n + rho)) * (1 - s * s / ((n + rho) * v)) ** (-n / 2)


@pytest.mark.parametrize("rho", [RHO, LEGACY_RHO])
def test_interval_endpoints_solve_the_defining_equation(rho: float) -> None:
    d = np.array([1.2, 0.4, 2.1, 0.9, 1.5, 1.1, 0.3, 1.8])
    n, m = len(d), d.mean()
    q = ((d - m) ** 2).sum()
    # by hand: c = (alpha^2 rho / (n + rho))^(1/n), k = (1 - c)(n + rho), half = sqrt(k Q / (n (n - k)))
    c = (0.05 ** 2 * rho / (8 + rho)) ** (1 / 8)
    k = (1 - c) * (8 + rho)
    half = math.sqrt(k * q / (8 * (8 - k)))
    assert float(cs_halfwidth(n, q, 0.05, rho)) == pytest.approx(half, rel=1e-12)
    assert _martingale(d, m - half, (0.05, rho)) == pytest.approx(1 / 0.05, rel=1e-9)  # the boundary: M = 1/alpha
    assert _martingale(d, m + half, (0.05, rho)) == pytest.approx(1 / 0.05, rel=1e-9)
    assert _martingale(d, m, (0.05, rho)) < 20 and _martingale(d, m + 1.5 * half, (0.05, rho)) > 20


def test_interval_is_unbounded_until_enough_pairs() -> None:
    assert math.isinf(float(cs_halfwidth(2, 1.0, 0.05, LEGACY_RHO)))
    assert math.isinf(float(cs_halfwidth(4, 1.0, 0.05, LEGACY_RHO)))  # k = 4.25 > 4 at n = 4
    assert math.isfinite(float(cs_halfwidth(5, 1.0, 0.05, LEGACY_RHO)))  # k = 4.735 < 5
    assert _first(0.05, LEGACY_RHO) == 5 and _first(0.01, LEGACY_RHO) == 6
    # rho = 1/4: k = 3.65 < 4 at n = 4 (alpha 5%) and 4.81 < 5 at n = 5 (1%, Bonferroni over 5 comparisons)
    assert math.isinf(float(cs_halfwidth(3, 1.0, 0.05))) and math.isfinite(float(cs_halfwidth(4, 1.0, 0.05)))
    assert _first(0.05) == 4 and _first(0.01) == 5
    # Bonferroni: paper_table's five steps at 5% decide from 5 seeds, like one comparison at 1%
    five = tuple((f"c{i}", f"a{i}", "b") for i in range(5))
    assert first_look(TRule(comparisons=five)) == _first(0.01) == 5


def test_the_default_rho_gives_a_useful_first_look() -> None:
    """The first finite interval of rho = 1 at 1% (paper_table's 5 comparisons) is +-7.4 sd at 6
    seeds: no verdict possible. rho = 1/4 is finite at 5 and +-2.9 sd at 6, and within 5% of
    rho = 1's width from 10 seeds on."""
    unit = {r: [float(cs_halfwidth(n, n - 1, 0.01, r)) for n in (6, 10, 20)] for r in (RHO, LEGACY_RHO)}
    assert unit[LEGACY_RHO][0] > 7 and unit[RHO][0] < 3
    assert all(new < 1.05 * old for new, old in zip(unit[RHO][1:], unit[LEGACY_RHO][1:]))


def test_verdicts_of_intervals() -> None:
    assert verdict_of(0.2, 3.0, 1.0) == HELPS
    assert verdict_of(-3.0, -0.1, 1.0) == HURTS
    assert verdict_of(-0.5, 0.9, 1.0) == EQUIVALENT
    assert verdict_of(-0.5, 1.2, 1.0) == UNDECIDED
    assert verdict_of(-0.5, 0.9, 0.0) == UNDECIDED  # no margin: no equivalence verdict


def test_first_decisive_look_and_running_interval() -> None:
    d = [5.0, 5.2, 4.9, 5.1, 5.0, 4.8, 5.3]
    low, high, verdict, at = decide_sequence(d, 1.0, 0.05, TRule())
    assert verdict == HELPS and at == _first(0.05)  # the first finite interval already excludes 0
    assert 0 < low < 5.0 < high
    # the running interval is the intersection: never wider than the last look's own interval
    last = np.array(d)
    half = float(cs_halfwidth(len(d), ((last - last.mean()) ** 2).sum(), 0.05))
    assert high - low <= 2 * half + 1e-12
    low, high, verdict, at = decide_sequence([0.01, -0.02, 0.0, 0.02, -0.01, 0.01], 1.0, 0.05, TRule())
    assert verdict == EQUIVALENT and -1 < low < high < 1


def _exact(n: int, mean: float, sd: float) -> np.ndarray:
    """n differences whose sample mean and sd are exactly `mean` and `sd`."""
    z = np.random.default_rng(n).normal(size=n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


@pytest.mark.parametrize("mean,sd,margin,verdict", [(0.8, 2.0, 1.0, HURTS), (0.2, 0.6, 1.0, EQUIVALENT),
                                                    (-5.0, 3.0, 1.0, HURTS), (0.3, 1.0, 0.0, HELPS)])
def test_seeds_to_decide_is_the_first_look_that_would_give_a_verdict(mean: float, sd: float, margin: float,
                                                                     verdict: str) -> None:
    """If the mean and spread hold, the interval at the predicted seeds gives a verdict and one
    seed earlier it does not (checked with the interval itself, not the prediction's code)."""
    mean = -mean if verdict == HURTS and mean > 0 else mean
    n = int(seeds_to_decide(mean, sd, margin, 0.01, rule=TRule()))
    for pairs, decided in ((n, True), (n - 1, False)):
        d = _exact(pairs, mean, sd) if pairs >= 2 else np.array([mean])
        half = float(cs_halfwidth(pairs, ((d - d.mean()) ** 2).sum(), 0.01))
        assert verdict_of(mean - half, mean + half, margin) == (verdict if decided else UNDECIDED), pairs
    assert math.isinf(seeds_to_decide(0.0, 0.5, 0.0, 0.01, rule=TRule()))  # no difference and no margin: never decided
    assert math.isinf(seeds_to_decide(0.001, 1.0, 0.0, 0.01, cap=50, rule=TRule()))  # beyond the cap
    assert math.isnan(seeds_to_decide(0.5, math.nan, 1.0, 0.01, rule=TRule()))  # one seed: no spread yet


def test_verdict_table_shows_the_spread_and_what_an_undecided_one_would_take() -> None:
    values = pd.DataFrame({"a": np.zeros(6), "b": _exact(6, 0.004, 0.02)}, index=range(6))
    rule = TRule(1.0, "AP", (("b vs a", "b", "a"),))
    table = decisions_table(decide(values, rule), rule)
    row = table.iloc[0]
    assert row["verdict"] == "undecided" and row["sd of ΔAP"] == "2.00"
    assert row["this rule would need"] == f"{int(seeds_to_decide(0.004, 0.02, 0.01, 0.05, rule=TRule()))} seeds"
    assert row["diverged [95% CI]"] == "b 0/6 [0–46%]; a 0/6 [0–46%]"  # Clopper-Pearson: 1 − 0.025^(1/6)


def test_decide_splits_alpha_over_comparisons_and_names_needed_arms() -> None:
    seeds = range(10)
    rng = np.random.default_rng(0)
    base = rng.normal(30, 3, 10)
    values = pd.DataFrame({"a": base, "b": base + 5 + rng.normal(0, 0.3, 10), "c": base + rng.normal(0, 3, 10)},
                          index=list(seeds)) / 100  # fractions, as stored
    out = decide(values, TRule(1.0, "AP", (("b vs a", "b", "a"), ("c vs a", "c", "a"))))
    assert [d.verdict for d in out] == [HELPS, UNDECIDED]
    assert out[0].decided_at == _first(0.025)  # alpha / 2 per comparison
    assert needed_arms(out) == ["a", "c"]


def _simulate(delta: float, sd: float, margin: float, cap: int, studies: int, seed: int,
              alpha: float = 0.05) -> tuple[dict[str, float], float, float]:
    """Share of verdicts, mean seeds used, and the naive repeated paired t test's rate of
    'significant at some look' for paired differences ~ N(delta, sd), a look after every seed."""
    rng = np.random.default_rng(seed)
    d = rng.normal(delta, sd, (studies, cap))
    n = np.arange(1, cap + 1)
    mean = np.cumsum(d, 1) / n
    q = np.cumsum(d * d, 1) - n * mean ** 2
    half = cs_halfwidth(n[None, :], q, alpha)
    low, high = np.maximum.accumulate(mean - half, 1), np.minimum.accumulate(mean + half, 1)
    helps, hurts, same = low > 0, high < 0, (low > -margin) & (high < margin)
    decided = helps | hurts | same
    first = np.where(decided.any(1), decided.argmax(1), cap - 1)
    r = np.arange(studies)
    shares = {HELPS: helps[r, first].mean(), HURTS: (hurts[r, first] & ~helps[r, first]).mean(),
              EQUIVALENT: (same[r, first] & ~helps[r, first] & ~hurts[r, first]).mean()}
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / np.sqrt(q / (n - 1) / n)
        p = 2 * stats.t.sf(np.abs(t), n - 1)
    naive = float((p[:, 1:] < alpha).any(1).mean())
    return shares, float((first + 1).mean()), naive


STUDIES, CAP, MARGIN = 4000, 20, 1.0


def _upper(p: float) -> float:
    """The rate plus two simulation standard errors."""
    return p + 2 * math.sqrt(max(p * (1 - p), 1e-4) / STUDIES)


@pytest.mark.parametrize("sd", [1.0, 2.0, 3.0])
def test_error_rates_hold_under_peeking_after_every_seed(sd: float) -> None:
    # null: no true difference -> a wrong helps/hurts in at most 5% of studies
    shares, seeds_null, naive = _simulate(0.0, sd, MARGIN, CAP, STUDIES, seed=1)
    wrong = shares[HELPS] + shares[HURTS]
    assert wrong <= 0.05 and _upper(wrong) < 0.06, wrong
    # the same studies judged by a paired t test repeated after every seed: far above 5%
    assert naive > 0.15, naive
    # a true difference of 2 x margin -> a wrong "no effect" in at most 5% of studies
    shares, seeds_big, _ = _simulate(2 * MARGIN, sd, MARGIN, CAP, STUDIES, seed=2)
    assert shares[EQUIVALENT] <= 0.05 and shares[HURTS] == 0.0
    # +-margin/2: "hurts" for a positive truth (and "helps" for a negative one) stays rare
    shares_pos, _, _ = _simulate(MARGIN / 2, sd, MARGIN, CAP, STUDIES, seed=3)
    shares_neg, _, _ = _simulate(-MARGIN / 2, sd, MARGIN, CAP, STUDIES, seed=4)
    assert shares_pos[HURTS] <= 0.05 and shares_neg[HELPS] <= 0.05
    first = _first(0.05)  # no verdict before the first finite interval
    assert first <= seeds_big <= CAP and first <= seeds_null <= CAP


def test_a_clear_effect_stops_early() -> None:
    shares, seeds_used, _ = _simulate(5.0, 2.0, MARGIN, CAP, STUDIES, seed=5)
    assert shares[HELPS] > 0.99 and seeds_used < 8


def test_a_verdict_on_a_diverged_seed_says_what_it_rests_on() -> None:
    """Diverged trials score 0: they are counted, per arm, and a decided verdict that rests on
    one says so (the normal model does not expect a 0 among AP 30s)."""
    seeds = range(16)
    base = 0.30 + 0.01 * np.sin(np.arange(16))
    arm = base - 0.05 + 0.002 * np.cos(np.arange(16))
    arm[1] = 0.0  # diverged: the -5 points that 4 seeds would decide now take 15
    values = pd.DataFrame({"a": base, "b": arm}, index=list(seeds))
    diverged = pd.DataFrame({"a": False, "b": [s == 1 for s in seeds]}, index=list(seeds))
    rule = TRule(1.0, "AP", (("b vs a", "b", "a"),))
    (d,) = decide(values, rule, diverged)
    assert (d.verdict, d.decided_at) == (HURTS, 15) and d.arm_diverged == (1, 16) and d.reference_diverged == (0, 16)
    assert d.flags[0] == "diverged seed 1" and any(f.startswith("outlying seed 1") for f in d.flags)
    table = decisions_table([d], rule)
    label = table.loc[0, "verdict"]  # the flags, then the bounded rule's interval beside the t verdict
    assert label.startswith("hurts [rests on its assumption: diverged seed 1; ") and \
        "; distribution-free interval [" in label and label.endswith("]]")
    assert table.loc[0, "diverged [95% CI]"] == "b 1/16 [0–30%]; a 0/16 [0–21%]"
    # the same divergence after the decisive look: the verdict does not rest on it
    late = values.copy()
    late["b"] = base - 0.05 + 0.002 * np.cos(np.arange(16))
    late.loc[15, "b"] = 0.0
    (d,) = decide(late, rule, diverged.assign(b=[s == 15 for s in seeds]))
    assert d.verdict == HURTS and d.decided_at == 4 and d.flags == () and d.arm_diverged == (1, 16)


def test_no_verdict_only_when_neither_arm_learned() -> None:
    values = pd.DataFrame({"a": [0.001, 0.002, 0.001, 0.002, 0.001], "b": [0.001, 0.001, 0.002, 0.002, 0.001],
                           "c": [0.30, 0.31, 0.29, 0.30, 0.31]})
    rule = TRule(1.0, "AP", (("b vs a", "b", "a"), ("c vs a", "c", "a")))
    plain = decide(values, rule)
    assert [d.verdict for d in plain] == [EQUIVALENT, HELPS]  # true of the numbers
    judged = decide(values, rule, learned={"a": False, "b": False, "c": True})
    assert [d.verdict for d in judged] == [NOT_LEARNED, HELPS] and judged[0].final and not judged[0].decided
    assert needed_arms(judged) == []


def test_a_rule_round_trips_through_storage_and_old_ones_keep_their_values() -> None:
    rule = TRule(0.5, "AP-tail", (("b vs a", "b", "a"),), 12, alpha=0.01, rho=0.5)
    assert Rule.from_dict(rule.to_dict(), [], 99) == rule
    old = Rule.from_dict({"margin": 1.0, "measure": "AP", "seconds": 3.0}, [("x vs a", "x", "a")], 20)
    assert (old.kind, old.alpha, old.rho, old.comparisons, old.max_seeds) == \
        ("tmixture", 0.05, LEGACY_RHO, (("x vs a", "x", "a"),), 20)
