"""The decision rules' maths, one rule at a time, against their definitions (dinokit/ablate/rules/)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from dinokit.ablate import rules
from dinokit.ablate.rules import bounded, check, groupseq, tmixture
from dinokit.errors import DinokitError


def _exact(n: int, mean: float, sd: float) -> np.ndarray:
    """n differences whose sample mean and sd are exactly `mean` and `sd`."""
    z = np.random.default_rng(n).normal(size=n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


# --- t-mixture ------------------------------------------------------------------------------------

def _lai(d: np.ndarray, mu: float, rho: float) -> float:
    """Lai's M_n(mu) from its definition, not from the closed-form interval."""
    n, y = len(d), d - mu
    s, v = y.sum(), (y * y).sum()
    return math.sqrt(rho / (n + rho)) * (1 - s * s / ((n + rho) * v)) ** (-n / 2)


@pytest.mark.parametrize("rho,alpha", [(0.25, 0.05), (1.0, 0.01)])
def test_tmixture_ends_solve_the_martingale_equation(rho: float, alpha: float) -> None:
    d = np.array([1.2, 0.4, 2.1, 0.9, 1.5, 1.1, 0.3, 1.8])
    half = float(tmixture.cs_halfwidth(len(d), ((d - d.mean()) ** 2).sum(), alpha, rho))
    assert _lai(d, d.mean() - half, rho) == pytest.approx(1 / alpha, rel=1e-9)
    assert _lai(d, d.mean() + half, rho) == pytest.approx(1 / alpha, rel=1e-9)
    assert _lai(d, d.mean() + 1.01 * half, rho) > 1 / alpha > _lai(d, d.mean() + 0.99 * half, rho)


def test_tmixture_first_look_and_running_interval() -> None:
    assert tmixture.first_look(0.05) == 4 and tmixture.first_look(0.01) == 5
    assert tmixture.first_look(0.01, 1.0) == 6
    d = np.array([1.2, 0.4, 2.1, 0.9, 1.5, 1.1, 0.3, 1.8])
    run = rules.running_intervals("tmixture", d, 0.05, cap=20)
    assert run.shape == (8, 2) and np.isinf(run[:3]).all() and np.isfinite(run[3:]).all()
    # the README's worked example: [0.22, 2.10] after 8 seeds; intersected, never wider than a look's own
    assert run[-1] == pytest.approx([0.2227, 2.1023], abs=1e-4)
    own = tmixture.intervals(d[None], 0.05)[0]
    assert (run[:, 0] >= own[:, 0]).all() and (run[:, 1] <= own[:, 1]).all()


# --- the running intersection and the verdicts ------------------------------------------------------

def test_intersection_keeps_the_latest_interval_when_empty() -> None:
    raw = np.array([[[-np.inf, np.inf], [-1.0, 3.0], [0.5, 4.0], [3.5, 5.0], [-2.0, 6.0]]])
    run = rules.intersect(raw)[0]
    assert run.tolist() == [[-np.inf, np.inf], [-1.0, 3.0], [0.5, 3.0], [3.5, 5.0], [3.5, 5.0]]


def test_first_verdicts_in_order_helps_hurts_no_effect() -> None:
    run = np.array([[[-5, 5], [0.1, 3], [0.1, 0.5]],    # helps at look 2
                    [[-5, 5], [-4, 4], [-3, -0.2]],     # hurts at look 3
                    [[-5, 5], [-0.5, 0.9], [0, 0]],     # no effect at look 2
                    [[-5, 5], [-2, 2], [-1.5, 1.5]]], float)  # undecided
    code, at = rules.first_verdicts(run, 1.0)
    assert code.tolist() == [rules.HELPS, rules.HURTS, rules.EQUIVALENT, rules.UNDECIDED]
    assert at.tolist() == [2, 3, 2, 0]
    code, _ = rules.first_verdicts(run, 0.0)  # no margin: no equivalence verdict
    assert code[2] == rules.UNDECIDED


@pytest.mark.parametrize("kind", ["groupseq", "tmixture"])
def test_fast_simulation_path_equals_the_public_intervals(kind: str) -> None:
    d = np.random.default_rng(4).normal(0.8, 1.5, (40, 20))
    code, at = rules.simulate_verdicts(kind, d, 0.05, 1.0, cap=20)
    for i in range(len(d)):
        one, n = rules.first_verdicts(rules.running_intervals(kind, d[i], 0.05, cap=20)[None], 1.0)
        assert (one[0], n[0]) == (code[i], at[i])


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(DinokitError, match="unknown decision rule 'bayes'"):
        rules.running_intervals("bayes", np.zeros(5), 0.05, cap=20)
    with pytest.raises(DinokitError, match="21 pairs exceed the cap of 20"):
        rules.running_intervals("groupseq", np.zeros(21), 0.05, cap=20)
    with pytest.raises(DinokitError, match="exceeds the bound 1"):
        rules.running_intervals("bounded", np.array([0.2, -1.5]), 0.05, cap=20, bound=1.0)
    with pytest.raises(DinokitError, match="finite"):
        rules.running_intervals("tmixture", np.array([0.2, np.nan]), 0.05, cap=20)
    assert rules.running_intervals("tmixture", np.arange(30.0), 0.05, cap=20).shape == (30, 2)  # any n


# --- group-sequential ---------------------------------------------------------------------------------

def test_groupseq_boundaries_follow_the_power_family() -> None:
    """Each look's two-sided nominal level p_n, on the normal scale, is C (n / N)^(DELTA - 1/2):
    one constant C for all looks n >= FIRST (Pocock: DELTA = 1/2, constant level)."""
    c = groupseq.multipliers(0.05, 20)
    n = np.arange(groupseq.FIRST, 21)
    assert np.isinf(c[: groupseq.FIRST - 1]).all()
    level = 2 * special.stdtr(n - 1, -c[n - 1])
    const = -special.ndtri(level / 2) / (n / 20) ** (groupseq.DELTA - 0.5)
    assert np.allclose(const, groupseq.critical(0.05, 20), rtol=1e-9)
    assert (level < 0.05).all() and level.sum() > 0.05  # each look below alpha; together they would exceed it


def test_groupseq_is_deterministic_and_cached() -> None:
    first = groupseq.multipliers(0.01, 12).copy()
    groupseq._null_maxima.cache_clear()
    groupseq._multipliers.cache_clear()
    again = groupseq.multipliers(0.01, 12)
    assert np.array_equal(first, again)
    assert groupseq.multipliers(0.01, 12) is again  # the second call is a cache hit


@pytest.mark.parametrize("cap,alpha", [(8, 0.05), (20, 0.05), (20, 0.01), (40, 0.01), (100, 0.05)])
def test_groupseq_covers_at_every_look_with_1_minus_alpha(cap: int, alpha: float) -> None:
    """Fresh normal sequences (not the calibration's): the share that leaves the interval at some
    look is at most alpha (+3 simulation sd) and not far below it (the calibration is tight)."""
    reps = 20_000
    d = np.random.default_rng(99).normal(0.3, 2.0, (reps, cap))
    raw = groupseq.intervals(d, alpha, cap)  # the design itself, also where the dispatch prefers the t-mixture
    miss = ((raw[..., 0] > 0.3) | (raw[..., 1] < 0.3)).any(axis=1).mean()
    se = math.sqrt(alpha * (1 - alpha) / reps)
    assert 0.75 * alpha < miss <= alpha + 3 * se, miss


def test_groupseq_is_used_only_where_it_is_narrower_than_the_tmixture_at_every_look() -> None:
    for alpha in (0.05, 0.01, 0.002):
        for cap in (8, 20, 30):
            assert rules.effective_kind("groupseq", alpha, cap) == "groupseq", (alpha, cap)
            n = np.arange(groupseq.FIRST, cap + 1)
            assert (groupseq.unit_halfwidth(alpha, cap)[n - 1] < tmixture.unit_halfwidth(n, alpha)).all()
    # at a cap of 100 the 97 looks cost more than the t-mixture's anytime bound at the early ones
    n = np.arange(groupseq.FIRST, 101)
    assert (groupseq.unit_halfwidth(0.05, 100)[n - 1] > tmixture.unit_halfwidth(n, 0.05)).any()
    assert rules.effective_kind("groupseq", 0.05, 100) == "tmixture"


def test_groupseq_falls_back_to_the_tmixture_where_uncalibrated() -> None:
    d = _exact(30, 0.5, 1.0)
    assert rules.effective_kind("groupseq", 0.05, 20) == "groupseq"
    assert rules.effective_kind("groupseq", 0.05, groupseq.MAX_CAP + 1) == "tmixture"
    assert rules.effective_kind("groupseq", 1e-5, 20) == "tmixture"  # too far in the tail for the simulation
    big = rules.running_intervals("groupseq", d, 0.05, cap=groupseq.MAX_CAP + 1)
    assert np.array_equal(big, rules.running_intervals("tmixture", d, 0.05, cap=20))
    assert rules.first_look("groupseq", 0.05, cap=500) == tmixture.first_look(0.05)


# --- seeds to decide ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["groupseq", "tmixture"])
@pytest.mark.parametrize("mean,sd,margin,verdict", [(1.2, 1.0, 1.0, rules.HELPS), (-1.5, 1.5, 1.0, rules.HURTS),
                                                    (0.1, 0.4, 1.0, rules.EQUIVALENT)])
def test_seeds_to_decide_is_the_first_look_that_would_decide(kind: str, mean: float, sd: float, margin: float,
                                                             verdict: int) -> None:
    """If the mean and spread hold, the look's own interval decides at the predicted seeds and not
    one seed earlier (checked with the interval itself)."""
    n = int(rules.seeds_to_decide(kind, mean, sd, margin, 0.05, cap=20))
    assert rules.first_look(kind, 0.05, cap=20) <= n <= 20
    for pairs, want in ((n, verdict), (n - 1, rules.UNDECIDED)):
        d = _exact(pairs, mean, sd)
        own = rules.look_intervals(kind, d[None], 0.05, cap=20)[:, -1:]
        assert rules.first_verdicts(own, margin)[0][0] == want, pairs


def test_seeds_to_decide_edge_cases() -> None:
    assert math.isnan(rules.seeds_to_decide("groupseq", 0.5, math.nan, 1.0, 0.05, cap=20))
    assert math.isinf(rules.seeds_to_decide("groupseq", 0.0, 0.5, 0.0, 0.05, cap=20))  # nothing to find
    assert math.isinf(rules.seeds_to_decide("groupseq", 0.2, 3.0, 0.0, 0.05, cap=20))  # not by the cap
    assert 20 < rules.seeds_to_decide("tmixture", 0.5, 3.0, 0.0, 0.05, cap=2000) < 2000  # the t-mixture has no cap
    # bounded: far more seeds than the t rules for the same difference, and a verdict when it is large
    assert rules.seeds_to_decide("bounded", 0.02, 0.02, 0.01, 0.05, cap=1000, bound=1.0) > 100
    assert rules.seeds_to_decide("bounded", 0.5, 0.1, 0.01, 0.05, cap=1000, bound=1.0) < 20


# --- bounded (betting) -----------------------------------------------------------------------------------

def _capital(x: np.ndarray, m: float, alpha: float) -> tuple[float, float]:
    """theta K+ and (1 - theta) K- at m after all of x, one seed at a time from the paper's definitions."""
    kp, km, mu_sum, var_sum = 1.0, 1.0, 0.0, 0.0
    for t, xt in enumerate(x, start=1):
        sigma2_prev = (0.25 + var_sum) / t  # sigma2_{t-1}: prior 1/4 plus t - 1 seeds, over t
        lam = math.sqrt(2 * math.log(2 / alpha) / (sigma2_prev * t * math.log(1 + t)))
        kp *= 1 + min(lam, bounded.TRUNC / m) * (xt - m)
        km *= 1 - min(lam, bounded.TRUNC / (1 - m)) * (xt - m)
        mu_sum += xt
        var_sum += (xt - (0.5 + mu_sum) / (t + 1)) ** 2
    return bounded.THETA * kp, (1 - bounded.THETA) * km


def test_bounded_ends_are_where_the_capital_reaches_one_over_alpha() -> None:
    d = np.clip(np.random.default_rng(2).normal(0.3, 0.25, 25), -1, 1)
    low, high = bounded.intervals(d[None], 0.05, 1.0)[0, -1]
    x = (d + 1) / 2
    lo, hi = (low + 1) / 2, (high + 1) / 2
    assert _capital(x, lo - 1e-6, 0.05)[0] >= 20 > _capital(x, lo + 1e-6, 0.05)[0]
    assert _capital(x, hi + 1e-6, 0.05)[1] >= 20 > _capital(x, hi - 1e-6, 0.05)[1]
    assert 0 < low < 0.3 < high  # this sample is decisive: helps


def test_bounded_scales_with_the_bound_and_rejections_match_intervals() -> None:
    d = np.random.default_rng(5).normal(3.0, 1.0, (30, 20))
    iv = bounded.intervals(d, 0.05, 10.0)
    assert np.allclose(iv, 10 * bounded.intervals(d / 10, 0.05, 1.0), atol=1e-9)
    run = rules.intersect(iv)
    below, above = bounded.running_rejections(d, 0.05, 10.0, np.array([0.0, 1.0]))
    assert np.array_equal(below[..., 0], run[..., 0] > 0) and np.array_equal(above[..., 1], run[..., 1] < 1.0)
    assert (below[:, -1, 0]).mean() > 0.5  # a 3 AP difference against a 10 AP bound is found in 20 seeds


def test_bounded_first_look() -> None:
    assert [bounded.first_look(a) for a in (0.05, 0.01)] == [7, 10]
    d = np.ones(10)
    run = rules.running_intervals("bounded", d, 0.05, cap=20, bound=1.0)
    assert run[5, 0] <= 0 < run[6, 0]  # all at +bound: helps at the 7th, not the 6th


# --- the assumption check ---------------------------------------------------------------------------------

def test_flags_name_what_they_see() -> None:
    seeds = [42, 43, 44, 45, 46, 47, 48, 49]
    d = np.array([1.0, 1.2, 0.8, 1.1, 0.9, 1.0, -6.0, 1.05])
    flags = rules.assumption_flags(d, np.array([0, 0, 0, 0, 0, 0, 1, 0], bool), seeds=seeds)
    assert flags[0] == "diverged seed 48"
    assert any(f.startswith("outlying seed 48 (") for f in flags)
    assert any(f.startswith("skewed (sample skewness -2.") for f in flags)
    assert rules.assumption_flags(_exact(10, 1.0, 1.0)) == []
    assert rules.assumption_flags(np.array([1.0, 50.0, 2.0])) == []  # too few pairs to judge
    assert "outlying pair 7" in " ".join(rules.assumption_flags(d))


def test_flag_thresholds_hold_their_level() -> None:
    """Fresh normal data: each check fires in about LEVEL of samples (not the calibration's draws)."""
    z = np.random.default_rng(77).standard_normal((20_000, 12))
    skewed, outlier = check.flags_matrix(z)
    assert skewed.mean() == pytest.approx(check.LEVEL, abs=0.004)
    assert outlier.mean() == pytest.approx(check.LEVEL, abs=0.004)
