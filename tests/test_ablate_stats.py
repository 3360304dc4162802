"""Convergence statistics and power against hand computations; the convergence report on a
hand-made history (AUC, steps to AP50 thresholds, paired intervals, forest plot, summary.csv)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dinokit.ablate.report import ReportData, render_markdown, summarize, write_report
from dinokit.ablate.stats import (
    curve_auc, curve_stats, first_step_reaching, paired_difference, paired_t_power, seeds_needed,
)

T_2DOF = 4.302652729911275  # t(0.975; 2 dof), from printed tables


def test_auc_is_the_trapezoid_mean_height() -> None:
    # marks 10, 20, 40 with AP50 0.1, 0.3, 0.5: trapezoids 10*(0.1+0.3)/2 + 20*(0.3+0.5)/2 = 2 + 8
    assert curve_auc(np.array([20, 10, 40]), np.array([0.3, 0.1, 0.5])) == pytest.approx(10 / 30)
    assert curve_auc(np.array([5]), np.array([0.2])) == pytest.approx(0.2)
    assert math.isnan(curve_auc(np.array([]), np.array([])))


def test_first_step_reaching_a_threshold() -> None:
    steps, ap50 = np.array([10, 20, 30, 40]), np.array([0.1, 0.35, 0.29, 0.5])
    assert first_step_reaching(steps, ap50, 0.3) == 20
    assert first_step_reaching(steps, ap50, 0.5) == 40  # reaching exactly counts
    assert math.isnan(first_step_reaching(steps, ap50, 0.6))  # not reached


def test_curve_stats_per_trial() -> None:
    hist = pd.DataFrame({"trial": [0, 0, 1, 1], "step": [10, 20, 10, 20], "AP50": [0.2, 0.4, 0.5, 0.6]})
    c = curve_stats(hist).set_index("trial")
    assert c.loc[0, "auc"] == pytest.approx(0.3) and c.loc[1, "auc"] == pytest.approx(0.55)
    assert c.loc[0, "steps_to_30"] == 20 and math.isnan(c.loc[0, "steps_to_50"])
    assert c.loc[1, "steps_to_30"] == 10 and c.loc[1, "steps_to_50"] == 10


def test_paired_interval_by_hand() -> None:
    d = paired_difference(pd.Series([0.30, 0.33, 0.31], index=[1, 2, 3]), pd.Series([0.28, 0.30, 0.30], index=[1, 2, 3]))
    # differences 0.02, 0.03, 0.01: mean 0.02, sd 0.01
    half = T_2DOF * 0.01 / math.sqrt(3)
    assert (d.mean, d.low, d.high, d.n, d.sd) == pytest.approx((0.02, 0.02 - half, 0.02 + half, 3, 0.01))
    assert not d.resolved  # half width 0.0248 > 0.02: the interval contains 0
    assert paired_difference(pd.Series([0.32, 0.321, 0.319]), pd.Series([0.30, 0.30, 0.30])).resolved


def test_power_against_published_sample_sizes() -> None:
    # paired t, two-sided 5%, 80% power (G*Power, "means: difference from constant, matched pairs"):
    # effect dz = 0.5 -> 34 pairs, dz = 0.8 -> 15, dz = 1.0 -> 10
    assert seeds_needed(0.01, 0.02) == 34
    assert seeds_needed(-0.8, 1.0) == 15
    assert seeds_needed(0.03, 0.03) == 10
    # normal approximation n = ((z_.975 + z_.8) / dz)^2 is the lower bound the t test sits just above
    assert ((1.959964 + 0.841621) / 0.5) ** 2 == pytest.approx(31.4, abs=0.05)
    assert paired_t_power(1.0, 10) >= 0.8 > paired_t_power(1.0, 9)
    assert seeds_needed(0.0, 0.1) == math.inf and seeds_needed(0.01, 0.0) == 2
    assert math.isnan(seeds_needed(0.01, math.nan))


def _data() -> ReportData:
    """Two arms x 3 seeds, marks 10, 20, 30. `fast` is the baseline curve shifted up 0.1 (+/-)."""
    base = {1: [0.1, 0.3, 0.4], 2: [0.2, 0.3, 0.5], 3: [0.1, 0.2, 0.45]}
    fast = {1: [0.2, 0.4, 0.5], 2: [0.3, 0.5, 0.55], 3: [0.25, 0.3, 0.6]}
    trials, hist, number = [], [], 0
    for arm, curves in (("base", base), ("fast", fast)):
        for seed, ys in curves.items():
            trials.append({"trial": number, "state": "COMPLETE", "arm": arm, "seed": seed, "AP": ys[-1] / 2,
                           "AP50": ys[-1], "AP75": ys[-1] / 3, "APs": 0.0, "train_time": 5.0, "params": 1e6})
            hist += [{"trial": number, "arm": arm, "seed": seed, "step": s, "AP50": y} for s, y in zip((10, 20, 30), ys)]
            number += 1
    trials_df = pd.DataFrame(trials).merge(curve_stats(pd.DataFrame(hist)), on="trial")
    return ReportData("conv", ["base", "fast"], "base", trials_df, pd.DataFrame(hist), [1, 2, 3], {})


def test_convergence_summary_by_hand(tmp_path: Path) -> None:
    data = _data()
    s = summarize(data.trials, data.arms, data.baseline).set_index("arm")
    # AUC = mean height: base seed 1: (10*(0.1+0.3)/2 + 10*(0.3+0.4)/2) / 20 = 0.275
    aucs = {"base": [0.275, 0.325, 0.2375], "fast": [0.375, 0.4625, 0.3625]}
    assert s.loc["base", "auc_mean"] == pytest.approx(np.mean(aucs["base"]))
    d = np.subtract(aucs["fast"], aucs["base"])  # 0.1, 0.1375, 0.125
    half = T_2DOF * d.std(ddof=1) / math.sqrt(3)
    assert s.loc["fast", "dauc"] == pytest.approx(d.mean())
    assert (s.loc["fast", "dauc_low"], s.loc["fast", "dauc_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert s.loc["fast", "dauc_seeds"] == seeds_needed(d.mean(), d.std(ddof=1))
    # steps to AP50 0.3: base 20, 20, 30; fast 20, 10, 20 -> paired -0, -10, -10
    assert s.loc["base", "steps_to_30_mean"] == pytest.approx(70 / 3)
    assert s.loc["fast", "dsteps_to_30"] == pytest.approx(-20 / 3)
    # steps to 0.5: base only seed 2 (30); fast seeds 1 (30), 2 (20), 3 (30): one pair
    assert s.loc["base", "steps_to_50_reached"] == 1 and s.loc["fast", "steps_to_50_reached"] == 3
    assert s.loc["fast", "dsteps_to_50"] == -10 and s.loc["fast", "dsteps_to_50_n"] == 1
    # final AP50: fast - base = 0.1, 0.05, 0.15
    assert s.loc["fast", "dAP50"] == pytest.approx(0.1)

    write_report(data, tmp_path)
    for name in ("forest.png", "convergence.png", "ap.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(tmp_path / "summary.csv").set_index("arm")
    assert csv.loc["fast", "dauc"] == pytest.approx(d.mean())
    md = render_markdown(data, s.reset_index())
    conv = md.split("## Convergence")[1].split("\n\n")[1].splitlines()
    rows = {line.split("|")[1].strip(): line for line in conv[2:]}
    assert "not reached" not in rows["fast"] and "1/3 seeds" in rows["base"]
    assert "(1 pair)" in rows["fast"]  # Δsteps to 0.5 has a single pair: no interval
    assert f"{100 * np.mean(aucs['fast']):.1f}" in rows["fast"]


def test_differences_that_round_to_zero_have_no_minus_sign() -> None:
    from dinokit.ablate.format import signed

    assert signed(-0.0001) == "+0.0" and signed(-0.02) == "−2.0"
