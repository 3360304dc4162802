"""Synthetic studies for the rules' error rates and costs (tests/test_rules_sim.py, benchmarks/rules_sim.py).

A study is a sequence of `cap` paired differences d = effect + sd * noise, looked at after every
seed; its verdict is the rule's first decisive look. The noise shapes are those real paired
differences take: normal; heavy-tailed (t with 3 df); skewed (centred lognormal, skewness 6.2);
and divergent (normal, but 10% of seeds fall 5-6 sd, i.e. a diverged or half-diverged trial).
Every shape is centred, so the true mean difference is `effect` exactly. The rules see the same
draws in each cell (common random numbers), so their costs compare pair by pair.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dinokit.ablate import rules
from dinokit.ablate.rules import bounded, check

SHAPES = ("normal", "t3", "lognormal", "diverge")
EFFECTS = (0.0, 0.5, 1.0, 1.5, 2.0)  # x margin
SDS = (1.0, 2.0, 3.0, 4.0)  # AP points, against a margin of 1 AP
RULES = rules.KINDS + ("guarded",)  # guarded: groupseq, except bounded at a look where the check flags the data


def noise(shape: str, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Centred noise of one shape (size): sd 1, except `diverge`, whose normal part has sd 1."""
    if shape == "normal":
        return rng.standard_normal(size)
    if shape == "t3":
        return rng.standard_t(3, size) / math.sqrt(3.0)
    if shape == "lognormal":
        return (rng.lognormal(0.0, 1.0, size) - math.exp(0.5)) / math.sqrt((math.e - 1.0) * math.e)
    if shape == "diverge":
        drop = (rng.random(size) < 0.1) * rng.uniform(5.0, 6.0, size)
        return rng.standard_normal(size) - drop + 0.1 * 5.5
    raise ValueError(f"unknown shape {shape}")


def draw(shape: str, effect: float, sd: float, reps: int, cap: int, seed: int, bound: float) -> np.ndarray:
    """reps studies of cap differences (reps, cap), clipped to +-bound (AP differences cannot exceed it;
    at sd <= 4 against 100 points the clip moves no mean by more than 1e-6)."""
    rng = np.random.default_rng(seed)
    return np.clip(effect + sd * noise(shape, rng, (reps, cap)), -bound, bound)


def guarded_verdicts(d: np.ndarray, alpha: float, margin: float, cap: int,
                     bound: float) -> tuple[np.ndarray, np.ndarray]:
    """groupseq's verdict at each look, except at a look where check.py flags the data seen so far,
    which only the bounded rule may decide: codes (R,) and pairs used (R,)."""
    run = rules.intersect(rules.look_intervals("groupseq", d, alpha, cap=cap))
    low, high = run[..., 0], run[..., 1]
    below, above = bounded.running_rejections(d, alpha, bound, np.array([0.0, -margin, margin]))
    flagged = np.zeros(d.shape, bool)
    for n in range(check.MIN_PAIRS, d.shape[1] + 1):
        skewed, outlier = check.flags_matrix(d[:, :n])
        flagged[:, n - 1] = skewed | outlier
    helps = np.where(flagged, below[..., 0], low > 0)
    hurts = np.where(flagged, above[..., 0], high < 0)
    same = np.where(flagged, below[..., 1] & above[..., 2], (-margin < low) & (high < margin))
    return rules.first_decisive(helps, hurts, same)


@dataclass(frozen=True)
class Cell:
    """One rule on one shape, spread and effect: rates over `reps` studies."""

    rule: str
    shape: str
    sd: float
    effect: float  # true mean difference (the measure's units)
    reps: int
    wrong_sign: int  # helps/hurts against the truth (any sign verdict at effect 0)
    wrong_same: int  # 'no effect' where |effect| >= margin
    correct: int  # the verdict the truth calls for: its sign where effect != 0, or 'no effect' where |effect| < margin
    undecided: int  # no verdict by the cap
    seeds: float  # mean pairs used (an undecided study uses the cap)
    seeds_correct: float  # mean pairs among the studies that reached a correct verdict


def verdicts(rule: str, d: np.ndarray, alpha: float, margin: float, cap: int, bound: float,
             rho: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Verdict codes (R,) and pairs used (R,) of one rule (RULES) on studies d (R, cap)."""
    if rule == "guarded":
        return guarded_verdicts(d, alpha, margin, cap, bound)
    return rules.simulate_verdicts(rule, d, alpha, margin, cap=cap, rho=rho, bound=bound)


def run_cell(rule: str, shape: str, effect: float, sd: float, *, margin: float, alpha: float, cap: int,
             reps: int, seed: int, bound: float, rho: float = 0.25) -> Cell:
    """Simulate one cell; the data depend on (seed, shape, sd, effect) only, not on the rule."""
    key = [seed, SHAPES.index(shape), int(round(1000 * sd)), int(round(1000 * effect))]
    d = draw(shape, effect, sd, reps, cap, int(np.random.SeedSequence(key).generate_state(1)[0]), bound)
    code, at = verdicts(rule, d, alpha, margin, cap, bound, rho)
    sign = code == rules.HELPS if effect > 0 else code == rules.HURTS if effect < 0 else np.zeros(reps, bool)
    wrong_sign = ((code == rules.HURTS) if effect > 0 else (code == rules.HELPS) if effect < 0
                  else (code == rules.HELPS) | (code == rules.HURTS))
    wrong_same = (code == rules.EQUIVALENT) & (abs(effect) >= margin)
    correct = sign | ((code == rules.EQUIVALENT) & (abs(effect) < margin))
    used = np.where(code == rules.UNDECIDED, cap, at)
    return Cell(rule, shape, sd, effect, reps, int(wrong_sign.sum()), int(wrong_same.sum()), int(correct.sum()),
                int((code == rules.UNDECIDED).sum()), float(used.mean()),
                float(at[correct].mean()) if correct.any() else math.nan)


def grid(rules_: list[str], shapes: list[str], sds: list[float], effects: list[float], *, margin: float, alpha: float,
         cap: int, reps: int, seed: int, bound: float) -> pd.DataFrame:
    """Every cell of rule x shape x sd x effect (effects in multiples of the margin): one row each,
    with the counts of Cell and the same as percentages."""
    rows = []
    for rule in rules_:
        for shape in shapes:
            for sd in sds:
                for e in effects:
                    c = run_cell(rule, shape, e * margin, sd, margin=margin, alpha=alpha, cap=cap, reps=reps,
                                 seed=seed, bound=bound)
                    row = dataclasses.asdict(c)
                    row.update({"effect_x_margin": e, "wrong_sign_pct": 100 * c.wrong_sign / reps,
                                "wrong_same_pct": 100 * c.wrong_same / reps, "correct_pct": 100 * c.correct / reps,
                                "undecided_pct": 100 * c.undecided / reps})
                    rows.append(row)
    return pd.DataFrame(rows)


def worst(df: pd.DataFrame) -> pd.DataFrame:
    """The largest error rates (%) of each rule on each shape, over spreads and effects."""
    return df.groupby(["rule", "shape"], sort=False)[["wrong_sign_pct", "wrong_same_pct", "undecided_pct"]].max()


def target(df: pd.DataFrame, a: str = "groupseq", b: str = "tmixture") -> dict[str, float]:
    """Issue 34's comparison of two rules on normal data at effects 1-2 x margin and sd 1-3:
    mean seeds used, the share of correct verdicts by the cap, and seeds spent per correct verdict
    (all seeds of all studies over all correct verdicts), pooled over those cells."""
    sel = df[(df["shape"] == "normal") & df["effect_x_margin"].between(1, 2) & df["sd"].between(1, 3)]
    out: dict[str, float] = {}
    for rule in (a, b):
        s = sel[sel["rule"] == rule]
        out[f"{rule}_seeds"] = float(s["seeds"].mean())
        out[f"{rule}_correct"] = float(s["correct"].sum() / s["reps"].sum())
        out[f"{rule}_per_correct"] = float((s["seeds"] * s["reps"]).sum() / s["correct"].sum())
    out["fewer_seeds"] = 1 - out[f"{a}_seeds"] / out[f"{b}_seeds"]
    out["fewer_per_correct"] = 1 - out[f"{a}_per_correct"] / out[f"{b}_per_correct"]
    return out
