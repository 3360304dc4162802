"""Every number the README states about a decision rule, computed here.

The '### Decision rules' section's numbers are checked against the README text itself (a changed
rule or a stale sentence fails). The numbers of the studio section's rule paragraphs (the
t-mixture's rho, the worked example) are computed and asserted at the precision the README
gives them; their sentences are quoted beside each assertion.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dinokit.ablate import rules
from dinokit.ablate.rules import bounded, check, groupseq, tmixture
from dinokit.ablate.rules.simulate import EFFECTS, RULES, SDS, SHAPES, draw, grid, target, worst

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SECTION = " ".join(README[README.index("### Decision rules"):README.index("### `dinokit tune`")].split())


def _says(text: str) -> None:
    assert " ".join(text.split()) in SECTION, f"README's Decision rules section does not say: {text}"


def _pm(x: float) -> str:
    return f"±{x:.2f}"


# --- the rules table ------------------------------------------------------------------------------

def test_first_looks_and_widths_in_the_table() -> None:
    n = np.array([5, 10, 20])
    gs = groupseq.unit_halfwidth(0.01, 20)[n - 1]
    tm = tmixture.unit_halfwidth(n, 0.01)
    t = stats.t.ppf(1 - 0.01 / 2, n - 1) / np.sqrt(n)
    first = {k: [rules.first_look(k, a, cap=20) for a in (0.05, 0.01)] for k in rules.KINDS}
    _says(f"| {first['groupseq'][0]} / {first['groupseq'][1]} | {' / '.join(map(_pm, gs))} |")
    _says(f"| {first['tmixture'][0]} / {first['tmixture'][1]} | {' / '.join(map(_pm, tm))} |")
    _says(f"| {first['bounded'][0]} / {first['bounded'][1]} | see below |")
    _says(f"| 2 / 2 | {' / '.join(map(_pm, t))} |")
    assert rules.DEFAULT == "groupseq" and "| `groupseq` (default) |" in SECTION


def test_groupseq_coverage_on_fresh_null_studies() -> None:
    d = np.random.default_rng(2024).normal(0.0, 1.0, (200_000, 20))
    miss = {}
    for alpha in (0.05, 0.01):
        raw = groupseq.intervals(d, alpha, 20)
        miss[alpha] = ((raw[..., 0] > 0) | (raw[..., 1] < 0)).any(axis=1).mean()
        assert miss[alpha] <= alpha
    _says(f"in {100 * miss[0.05]:.2f}% of them at α 5% and {100 * miss[0.01]:.2f}% at 1%")
    _says("one Monte Carlo run (100,000 normal sequences")
    assert groupseq.SIMS == 100_000 and groupseq.FIRST == 4 and groupseq.DELTA == 0.5  # "n = 4..N", Pocock


def test_groupseq_is_narrower_than_the_tmixture_for_the_caps_the_readme_names() -> None:
    for alpha in (0.001, 0.002, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1):
        for cap in range(groupseq.FIRST, 28 if alpha < 0.005 else 36):
            n = np.arange(groupseq.FIRST, cap + 1)
            assert (groupseq.unit_halfwidth(alpha, cap)[n - 1] < tmixture.unit_halfwidth(n, alpha)).all(), (alpha, cap)
            assert rules.effective_kind("groupseq", alpha, cap) == "groupseq"
    assert rules.effective_kind("groupseq", 0.001, 28) == "tmixture"  # where the README's range ends
    _says("narrower than the t-mixture at every look for every cap from 4 to 27 (to 35 at α ≥ 0.5%; checked for α "
          "from 0.1% to 10%)")


def test_what_the_bounded_rule_costs() -> None:
    def need(kind: str, mean: float, sd: float, alpha: float) -> int:
        cap = 20 if kind == "groupseq" else 5000
        return int(rules.seeds_to_decide(kind, mean, sd, 1.0, alpha, cap=cap, bound=100.0))

    small = [need(k, 2.0, 1.0, a) for k in ("bounded", "groupseq") for a in (0.05, 0.01)]
    step = [need(k, 15.7, 3.9, a) for k in ("bounded", "groupseq") for a in (0.05, 0.01)]
    _says(f"a +2 AP difference at sd 1 would need {small[0]} seeds at α 5% ({small[1]} at 1%) where groupseq "
          f"needs {small[2]} ({small[3]})")
    _says(f"step (sd 3.9) {step[0]} ({step[1]}) where groupseq needs {step[2]} ({step[3]})")
    # a mean-0 distribution in +-100: 98% of seeds at +2.04, 2% at -100; 20 seeds show no loss:
    assert 0.98 * (2 / 0.98) + 0.02 * -100 == pytest.approx(0.0)
    _says(f"a true mean of 0 gives {100 * 0.98 ** 20:.0f}% of the time when 2% of seeds lose 100 AP")


def test_flag_rates() -> None:
    def rate(shape: str, n: int) -> float:
        d = draw(shape, 0.0, 1.0, 20_000, 20, seed=341, bound=100.0)[:, :n]
        return float(np.logical_or(*check.flags_matrix(d)).mean())

    normal = [rate("normal", n) for n in range(5, 21)]
    _says(f"it flags {100 * min(normal):.1f}-{100 * max(normal):.1f}% of comparisons from 5 to 20 seeds")
    r = {s: [round(100 * rate(s, n)) for n in (10, 20)] for s in ("lognormal", "diverge", "t3")}
    _says(f"{r['lognormal'][0]}% / {r['lognormal'][1]}% of centred lognormal samples, {r['diverge'][0]}% / "
          f"{r['diverge'][1]}% of samples where 10% of seeds diverge 5-6 sd low and {r['t3'][0]}% / {r['t3'][1]}% "
          "of t (3 df) samples")
    assert check.LEVEL == 0.01  # "beyond its 99th percentile"


# --- the simulation tables -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """benchmarks/rules_sim.py's defaults at the README's 4,000 studies per cell."""
    return grid(list(RULES), list(SHAPES), list(SDS), list(EFFECTS), margin=1.0, alpha=0.05, cap=20, reps=4000,
                seed=34, bound=100.0)


def test_error_table(table: pd.DataFrame) -> None:
    w = worst(table)
    names = {"groupseq": "`groupseq`", "tmixture": "`tmixture`", "bounded": "`bounded`",
             "guarded": "`groupseq`, `bounded` at looks the check flags"}
    for rule, label in names.items():
        cells = " | ".join(f"{w.loc[(rule, s), 'wrong_sign_pct']:.1f} / {w.loc[(rule, s), 'wrong_same_pct']:.1f}"
                           for s in SHAPES)
        _says(f"| {label} | {cells} |")
    assert (table[table["rule"] == "bounded"]["undecided"] == 4000).all()  # "decided no study of the table"
    _says("decided no study of the table")
    _says(f"a simulation sd of {100 * math.sqrt(0.05 * 0.95 / 4000):.2f} points at 5%")


def test_seeds_table_and_target(table: pd.DataFrame) -> None:
    normal = table[table["shape"] == "normal"].set_index(["rule", "sd", "effect_x_margin"])
    for sd in (1.0, 2.0, 3.0):
        cells = []
        for e in (0.0, 1.0, 1.5, 2.0):
            gs, tm = normal.loc[("groupseq", sd, e)], normal.loc[("tmixture", sd, e)]
            cells.append(f"{gs.seeds:.1f} ({gs.correct_pct:.0f}%) vs {tm.seeds:.1f} ({tm.correct_pct:.0f}%)")
        _says(f"| {sd:g} | {' | '.join(cells)} |")
    t = target(table)
    _says(f"groupseq uses {100 * t['fewer_seeds']:.0f}% fewer seeds than the t-mixture ({t['groupseq_seeds']:.1f} "
          f"against {t['tmixture_seeds']:.1f} on average), reaches a correct verdict by the cap in "
          f"{100 * t['groupseq_correct']:.0f}% of studies against {100 * t['tmixture_correct']:.0f}%, and spends "
          f"{100 * t['fewer_per_correct']:.0f}% fewer seeds per correct verdict ({t['groupseq_per_correct']:.1f} "
          f"against {t['tmixture_per_correct']:.1f})")
    assert t["fewer_seeds"] < 0.30  # the README says the 30% is not reached


def test_the_check_sees_few_of_the_wrong_verdicts() -> None:
    """'the check flags only 1-9% of groupseq's wrong verdicts on lognormal and divergent
    differences' at the look that gave them (effect 0, sd 1, 2, 4; the simulation test's draws)."""
    shares = []
    for shape in ("lognormal", "diverge"):
        for sd in (1.0, 2.0, 4.0):
            d = draw(shape, 0.0, sd, 4000, 20, seed=5, bound=100.0)
            code, at = rules.simulate_verdicts("groupseq", d, 0.05, 1.0, cap=20)
            wrong = np.flatnonzero(np.isin(code, [rules.HELPS, rules.HURTS]))
            shares.append(np.mean([bool(rules.assumption_flags(d[i, :at[i]])) for i in wrong]))
    _says(f"the check flags only {100 * min(shares):.0f}-{100 * max(shares):.0f}% of groupseq's wrong verdicts")


# --- the studio section's t-mixture paragraph (numbers only: the lead edits those sentences) --------------

def test_rho_sentences() -> None:
    """'rho = 1/4 is finite from 5 seeds, +-2.9 sd at 6 and +-2.3 sd at 7, [...] (+-1.6 sd at 10,
    +-1.0 at 20)' and 'rho = 1 [...] at 6 seeds and is +-7.4 sd wide' (alpha 1%); the ratio of
    the widths (rho 1/4 over rho 1) from 10 to 30 seeds: 0.969-1.046 at 1%, 1.026-1.065 at 5%."""
    quarter = lambda n, a=0.01: float(tmixture.unit_halfwidth(n, a, 0.25))  # noqa: E731
    assert tmixture.first_look(0.01, 0.25) == 5 and tmixture.first_look(0.01, 1.0) == 6
    assert tmixture.first_look(0.05, 0.25) == 4 and tmixture.first_look(0.05, 1.0) == 5
    assert round(float(tmixture.unit_halfwidth(6, 0.01, 1.0)), 1) == 7.4
    assert [round(quarter(n), 1) for n in (6, 7, 10, 20)] == [2.9, 2.3, 1.6, 1.0]
    n = np.arange(10, 31)
    for alpha, low, high in ((0.01, 0.969, 1.046), (0.05, 1.026, 1.065)):
        ratio = tmixture.unit_halfwidth(n, alpha, 0.25) / tmixture.unit_halfwidth(n, alpha, 1.0)
        assert (round(float(ratio.min()), 3), round(float(ratio.max()), 3)) == (low, high)
        assert ratio.argmax() == len(n) - 1  # the widest at 30 seeds
    # the old sentence 'at most 4% wider than rho = 1 from 10 to 30 seeds' is false at both levels
    assert (tmixture.unit_halfwidth(30, 0.01, 0.25) / tmixture.unit_halfwidth(30, 0.01, 1.0)) > 1.04


def test_worked_example() -> None:
    """'After 8 seeds [...] m = 1.16, Q = 2.80, c = 0.305, k = 5.73, half-width 0.94: the interval
    [0.22, 2.10] [...] "helps, 6 seeds" (with rho = 1 the first decisive look is the 8th). A
    fixed-design 95% t interval would be [0.63, 1.69].'"""
    d = np.array([1.2, 0.4, 2.1, 0.9, 1.5, 1.1, 0.3, 1.8])
    m, q = d.mean(), ((d - d.mean()) ** 2).sum()
    c = (0.05 ** 2 * 0.25 / 8.25) ** (1 / 8)
    k = (1 - c) * 8.25
    half = float(tmixture.cs_halfwidth(8, q, 0.05))
    assert (round(m, 2), round(q, 2), round(c, 3), round(k, 2), round(half, 2)) == (1.16, 2.80, 0.305, 5.73, 0.94)
    assert [round(m - half, 2), round(m + half, 2)] == [0.22, 2.10]
    for rho, at in ((0.25, 6), (1.0, 8)):
        code, n = rules.first_verdicts(rules.running_intervals("tmixture", d, 0.05, cap=20, rho=rho)[None], 1.0)
        assert (code[0], n[0]) == (rules.HELPS, at)
    t = stats.t.ppf(0.975, 7) * d.std(ddof=1) / math.sqrt(8)
    assert [round(m - t, 2), round(m + t, 2)] == [0.63, 1.69]
    # under the group-sequential default (cap 20) the same seeds decide at the 6th as well
    code, n = rules.first_verdicts(rules.running_intervals("groupseq", d, 0.05, cap=20)[None], 1.0)
    assert (code[0], n[0]) == (rules.HELPS, 6)


def test_tmixture_simulation_sentence() -> None:
    """'simulates 4,000 studies per spread (paired sd 1, 2, 3 AP, a look after every seed up to 20):
    a wrong helps/hurts in 2.0-2.1% of null studies (15.7-19.7 seeds used on average) and a wrong
    "no effect" in at most 0.03% of those with a true difference of 2 x margin (helps in 100%, 83%
    and 42% of them at sd 1, 2, 3 [...]), where a paired t test repeated after every seed calls 25%
    of the null studies significant. A true +5 AP at sd 2 is called "helps" after 5.3 seeds on
    average.' (rho 1/4, alpha 5%, margin 1; the draws of tests/test_ablate_decide.py)"""
    wrong, used, same, helps, naive = [], [], [], [], []
    for sd in (1.0, 2.0, 3.0):
        d = np.random.default_rng(1).normal(0.0, sd, (4000, 20))
        code, at = rules.simulate_verdicts("tmixture", d, 0.05, 1.0, cap=20)
        wrong.append(np.isin(code, [rules.HELPS, rules.HURTS]).mean())
        used.append(np.where(code == rules.UNDECIDED, 20, at).mean())
        n = np.arange(1, 21)
        mean = np.cumsum(d, 1) / n
        q = np.cumsum(d * d, 1) - n * mean ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            p = 2 * stats.t.sf(np.abs(mean / np.sqrt(q / (n - 1) / n)), n - 1)
        naive.append((p[:, 1:] < 0.05).any(1).mean())
        code, _ = rules.simulate_verdicts("tmixture", np.random.default_rng(2).normal(2.0, sd, (4000, 20)), 0.05, 1.0,
                                          cap=20)
        same.append((code == rules.EQUIVALENT).mean())
        helps.append((code == rules.HELPS).mean())
    assert (round(100 * min(wrong), 1), round(100 * max(wrong), 1)) == (2.0, 2.1)
    assert (round(min(used), 1), round(max(used), 1)) == (15.7, 19.7)
    assert round(100 * max(same), 2) <= 0.03 and [round(100 * h) for h in helps] == [100, 83, 42]
    assert {round(100 * x) for x in naive} == {25}
    code, at = rules.simulate_verdicts("tmixture", np.random.default_rng(5).normal(5.0, 2.0, (4000, 20)), 0.05, 1.0,
                                       cap=20)
    assert (code == rules.HELPS).all() and round(float(at.mean()), 1) == 5.3
