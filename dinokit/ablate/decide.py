"""Sequential verdicts: is a paired difference above 0, below 0, or inside +-margin?

The rule is an always-valid confidence sequence for the mean of the paired differences
(arm − reference, same seed), so a study may look after every seed and stop when it likes
without inflating its error rates. It is Lai's (1976) t-mixture sequence for normal
differences with unknown spread; with differences d_1..d_n, mean m, Q = sum (d_i − m)^2:

    M_n(mu) = sqrt(rho / (n + rho)) * (1 − S^2 / ((n + rho) V))^(−n/2),
    S = sum (d_i − mu),  V = sum (d_i − mu)^2

is a nonnegative martingale under the hypothesis "mean = mu" whatever the spread (the scale
is integrated out with the invariant measure, the standardised effect over N(0, 1/rho)), so by
Ville's inequality P(exists n: M_n(mu) >= 1/alpha) <= alpha. The set {mu: M_n(mu) < 1/alpha}
is the interval m +- sqrt(k Q / (n (n − k))) with c = (alpha^2 rho / (n + rho))^(1/n) and
k = (1 − c)(n + rho) (all of R while n <= k). The study's K comparisons each get alpha / K
(Bonferroni): every interval covers its true difference at every look with probability
>= 1 − alpha together, whatever the dependence between comparisons that share an arm.

A comparison's verdict is its first decisive look, in seed order: the interval above 0
("helps"), below 0 ("hurts"), or inside (−margin, +margin) ("no effect beyond +-margin").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

ALPHA = 0.05
RHO = 0.25  # prior precision of the standardised effect: the interval is finite from 5 seeds at 1% (4 at 5%)
LEGACY_RHO = 1.0  # studies stored without a rho ran under this one (finite only from 6 seeds at 1%)
RULE_ATTR = "dinokit_rule"  # a sequential study's rule in its storage: margin, measure, rho, seconds used
HELPS, HURTS, EQUIVALENT, UNDECIDED = "helps", "hurts", "no effect", "undecided"


def cs_halfwidth(n: np.ndarray | int, q: np.ndarray | float, alpha: float, rho: float = RHO) -> np.ndarray:
    """Half-width of the confidence sequence after n pairs whose differences have sum of
    squared deviations `q` (inf while it is unbounded, e.g. n < 2). Broadcasts over arrays."""
    n = np.asarray(n, dtype=float)
    q = np.asarray(q, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.exp(np.log(alpha * alpha * rho / (n + rho)) / n)
        k = (1.0 - c) * (n + rho)
        half = np.sqrt(k * q / (n * (n - k)))
    return np.where((n >= 2) & (n > k), half, np.inf)


def per_comparison(k: int, alpha: float = ALPHA) -> float:
    """Each of a study's k comparisons' share of alpha (Bonferroni)."""
    return alpha / max(1, k)


def verdict_of(low: float, high: float, margin: float) -> str:
    """The verdict an interval gives: helps / hurts / no effect / undecided."""
    if low > 0:
        return HELPS
    if high < 0:
        return HURTS
    if margin > 0 and -margin < low and high < margin:
        return EQUIVALENT
    return UNDECIDED


@dataclass(frozen=True)
class Decision:
    """One comparison's state after the seeds seen so far (differences in the measure's units)."""

    name: str
    arm: str  # the arm whose effect is measured
    reference: str  # the arm it is compared with
    n: int  # pairs seen
    mean: float
    low: float  # the confidence sequence's running interval (intersection over looks)
    high: float
    verdict: str
    decided_at: int  # pairs at the first decisive look (0 while undecided)
    sd: float = math.nan

    @property
    def decided(self) -> bool:
        return self.verdict != UNDECIDED


def decide_sequence(diffs: list[float] | np.ndarray, margin: float, alpha: float,
                    rho: float = RHO) -> tuple[float, float, str, int]:
    """Look after every pair of `diffs` (in seed order): the running interval at the end, the
    first decisive verdict and the number of pairs it took (0: undecided)."""
    d = np.asarray(diffs, dtype=float)
    low, high, verdict, at = -math.inf, math.inf, UNDECIDED, 0
    for n in range(2, len(d) + 1):
        head = d[:n]
        mean = float(head.mean())
        half = float(cs_halfwidth(n, float(((head - mean) ** 2).sum()), alpha, rho))
        low, high = max(low, mean - half), min(high, mean + half)
        if low > high:  # an empty intersection (chance <= alpha): keep the latest interval
            low, high = mean - half, mean + half
        if verdict == UNDECIDED:
            verdict = verdict_of(low, high, margin)
            at = n if verdict != UNDECIDED else 0
    return low, high, verdict, at


def decide(values: pd.DataFrame, comparisons: list[tuple[str, str, str]], margin: float,
           alpha: float = ALPHA, rho: float = RHO) -> list[Decision]:
    """Verdicts for `comparisons` ([(name, arm, reference)]) from `values` (index seed, one
    column per arm; NaN where a trial is missing). Each gets alpha / len(comparisons)."""
    each = per_comparison(len(comparisons), alpha)
    out = []
    for name, arm, ref in comparisons:
        if arm in values and ref in values:
            d = (values[arm] - values[ref]).dropna().sort_index().to_numpy(dtype=float)
        else:
            d = np.array([])
        low, high, verdict, at = decide_sequence(d, margin, each, rho)
        mean = float(d.mean()) if len(d) else math.nan
        sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
        out.append(Decision(name, arm, ref, len(d), mean, low, high, verdict, at, sd))
    return out


def seeds_to_decide(mean: float, sd: float, margin: float, alpha: float, cap: int = 1000,
                    rho: float = RHO) -> float:
    """The pairs at which this rule's interval, centred on `mean` with the spread `sd` seen so
    far, would first give a verdict (inf beyond `cap`, nan without a spread): the half-width must
    fall below |mean| (helps/hurts) or below margin - |mean| (no effect)."""
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return math.nan
    distance = max(abs(mean), margin - abs(mean))
    if distance <= 0:
        return math.inf
    n = np.arange(2, cap + 1)
    ok = np.flatnonzero(cs_halfwidth(n, sd * sd * (n - 1), alpha, rho) < distance)
    return float(n[ok[0]]) if len(ok) else math.inf


def needed_arms(decisions: list[Decision]) -> list[str]:
    """The arms an undecided comparison still needs, in first-seen order."""
    return list(dict.fromkeys(a for d in decisions if not d.decided for a in (d.reference, d.arm)))


def decisions_table(decisions: list[Decision], margin: float, scale: float, unit: str,
                    rho: float = RHO) -> pd.DataFrame:
    """The report's verdict table: one row per comparison; `scale` turns fractions into points."""
    from dinokit.ablate.format import signed
    from dinokit.ablate.stats import seeds_needed

    each = per_comparison(len(decisions))
    rows: list[dict[str, Any]] = []
    for d in decisions:
        interval = "—" if math.isinf(d.low) or math.isnan(d.low) else \
            f"[{signed(d.low, scale)}, {signed(d.high, scale)}]"
        label = {HELPS: "helps", HURTS: "hurts", EQUIVALENT: f"no effect beyond ±{margin:g}",
                 UNDECIDED: "undecided"}[d.verdict]
        if d.verdict in (HELPS, HURTS) and -margin / scale < d.low and d.high < margin / scale:
            label += f" (by less than {margin:g})"
        fixed = seeds_needed(d.mean, d.sd)
        rule = seeds_to_decide(d.mean, d.sd, margin / scale, each, rho=rho)
        rows.append({"comparison": d.name, "verdict": label,
                     "seeds": str(d.decided_at) if d.decided else f"{d.n} (not enough)",
                     f"mean Δ{unit}": "—" if math.isnan(d.mean) else signed(d.mean, scale),
                     "interval (always valid)": interval,
                     f"sd of Δ{unit}": "—" if math.isnan(d.sd) else f"{scale * d.sd:.2f}",
                     "this rule would need": _seeds(rule, d.decided),
                     "fixed design would need": _seeds(fixed, d.decided)})
    return pd.DataFrame(rows)


def _seeds(n: float, decided: bool) -> str:
    return "—" if decided or math.isnan(n) else ("> 1000" if math.isinf(n) else f"{int(n)} seeds")


def rule_text(margin: float, measure: str, k: int, alpha: float = ALPHA, rho: float = RHO) -> str:
    """One paragraph for the report: what the verdicts mean."""
    return (f"Verdicts on {measure} (COCO points), margin ±{margin:g}. Each interval is an always-valid "
            f"confidence sequence (Lai's t-mixture, rho={rho:g}) at {100 * alpha:g}% / {k} comparison(s) "
            f"(Bonferroni), so looking after every seed does not inflate the error rates. helps: the "
            f"interval lies above 0; hurts: below 0; no effect: inside ±{margin:g}. 'seeds' is the number "
            "of paired seeds at the first decisive look. 'sd of Δ' is the seeds' spread of the paired "
            "difference: it sets the cost of a verdict. For an undecided comparison, 'this rule would need' is "
            "the seeds at which this interval would give a verdict if the mean and the spread seen so far hold; "
            "'fixed design would need' is the paired t test's estimate (80% power, 5% two-sided).")
