"""A study's rule and the one function that gives its verdicts: `decide(values, rule, ...)`.

A sequential study stores one `Rule` when it starts (kind, alpha, rho, margin, measure, its
comparisons, the seed cap, the first look); every verdict the studio prints comes from `decide`
under that stored rule: the rounds, the stop line, the terminal, report.md/html, the captions and
`ablate report`. The rule's `kind` selects how the interval for a comparison's mean paired
difference is computed at each look (`KINDS`: adding a kind is one entry there); what is built on
it is shared: the running intersection over looks, the first decisive look, the verdict.

Kind 'tmixture': an always-valid confidence sequence for the mean of the paired differences
(arm − reference, same seed), so a study may look after every seed and stop when it likes without
inflating its error rates. It is Lai's (1976) t-mixture sequence for normal differences with
unknown spread; with differences d_1..d_n, mean m, Q = sum (d_i − m)^2:

    M_n(mu) = sqrt(rho / (n + rho)) * (1 − S^2 / ((n + rho) V))^(−n/2),
    S = sum (d_i − mu),  V = sum (d_i − mu)^2

is a nonnegative martingale under the hypothesis "mean = mu" whatever the spread (the scale
is integrated out with the invariant measure, the standardised effect over N(0, 1/rho)), so by
Ville's inequality P(exists n: M_n(mu) >= 1/alpha) <= alpha. The set {mu: M_n(mu) < 1/alpha}
is the interval m +- sqrt(k Q / (n (n − k))) with c = (alpha^2 rho / (n + rho))^(1/n) and
k = (1 − c)(n + rho) (all of R while n <= k). It assumes independent, normally distributed
paired differences. The study's K comparisons each get alpha / K (Bonferroni): every interval
covers its true difference at every look with probability >= 1 − alpha together, whatever the
dependence between comparisons that share an arm.

A comparison's verdict is its first decisive look, in seed order: the interval above 0
("helps"), below 0 ("hurts"), or inside (−margin, +margin) ("no effect beyond +-margin"); when
neither of its arms learned at this budget it gets no verdict (`NOT_LEARNED`, ablate/verdicts.py
says when).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

ALPHA = 0.05
RHO = 0.25  # prior precision of the standardised effect: the interval is finite from 5 seeds at 1% (4 at 5%)
LEGACY_RHO = 1.0  # studies stored without a rho ran under this one (finite only from 6 seeds at 1%)
RULE_ATTR = "dinokit_rule"  # a sequential study's stored rule (Rule.to_dict) in its storage
POINTS = 100.0  # measures are fractions in storage; a rule's margin is in COCO points
MEASURES = {"AP": "AP", "AP50": "AP50", "auc": "auc", "AP-tail": "AP_tail", "AP50-tail": "AP50_tail"}
HELPS, HURTS, EQUIVALENT, UNDECIDED = "helps", "hurts", "no effect", "undecided"
NOT_LEARNED = "no verdict"  # neither arm learned at this budget: the numbers answer no question
Comparison = tuple[str, str, str]  # (name, arm, reference)


def cs_halfwidth(n: np.ndarray | int, q: np.ndarray | float, alpha: float, rho: float = RHO) -> np.ndarray:
    """Half-width of the t-mixture sequence after n pairs whose differences have sum of squared
    deviations `q` (inf while it is unbounded, e.g. n < 2). Broadcasts over arrays."""
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


# --------------------------------------------------------------------------- the rule and its kinds


@dataclass(frozen=True)
class Rule:
    """Everything a verdict depends on, stored once per study (`to_dict` / `from_dict`).

    `margin` is in COCO points of `measure`; `comparisons` are the questions, each (name, arm,
    reference), and their number splits alpha; `max_seeds` is the cap the rule was set for."""

    margin: float = 1.0
    measure: str = "AP"
    comparisons: tuple[Comparison, ...] = ()
    max_seeds: int = 20
    kind: str = "tmixture"
    alpha: float = ALPHA
    rho: float = RHO  # tmixture's mixture precision; a study keeps the one it started with

    @property
    def column(self) -> str:
        return MEASURES[self.measure]

    @property
    def each(self) -> float:
        """Each comparison's alpha."""
        return per_comparison(len(self.comparisons), self.alpha)

    @property
    def first_look(self) -> int:
        return first_look(self)

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["comparisons"] = [list(c) for c in self.comparisons]
        return {**raw, "first_look": self.first_look}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], comparisons: list[Comparison], max_seeds: int) -> "Rule":
        """A stored rule; one stored before rules were complete keeps what it ran with: kind
        tmixture, alpha 5%, rho 1 (LEGACY_RHO) when none is stored, the comparisons of its arm set
        (`comparisons`) and, lacking a stored cap, `max_seeds`."""
        stored = raw.get("comparisons")
        return cls(float(raw["margin"]), str(raw["measure"]),
                   tuple(tuple(c) for c in stored) if stored else tuple(comparisons),  # type: ignore[misc]
                   int(raw.get("max_seeds", max_seeds)), str(raw.get("kind", "tmixture")),
                   float(raw.get("alpha", ALPHA)), float(raw.get("rho", LEGACY_RHO)))


Interval = Callable[[np.ndarray, float, Rule], tuple[float, float]]


@dataclass(frozen=True)
class Kind:
    """How one kind of rule computes the interval of a look, and what it rests on."""

    interval: Interval  # (differences so far in seed order, this comparison's alpha, rule) -> (low, high)
    anytime: bool  # valid at any number of seeds: a larger --max-seeds may continue a stored study
    describe: Callable[[Rule], str]  # for the report: what the interval is
    assumption: str  # what its error rates rest on


def _tmixture(d: np.ndarray, alpha: float, rule: Rule) -> tuple[float, float]:
    if len(d) < 2:
        return -math.inf, math.inf
    mean = float(d.mean())
    half = float(cs_halfwidth(len(d), float(((d - mean) ** 2).sum()), alpha, rule.rho))
    return mean - half, mean + half


KINDS: dict[str, Kind] = {
    "tmixture": Kind(_tmixture, True, lambda r: f"an always-valid confidence sequence (Lai's t-mixture, "
                     f"rho={r.rho:g})", "independent, normally distributed paired differences"),
}


def check_assumptions(diffs: np.ndarray, diverged: np.ndarray) -> list[str]:
    """What in a comparison's data its rule's assumption may not cover. A diverged seed scores 0
    (ablate/verdicts.py): an outlier no normal model expects."""
    k = int(np.count_nonzero(diverged))
    return [f"{k} diverged seed{'s' if k != 1 else ''} scored 0"] if k else []


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Decision:
    """One comparison's state after the seeds seen so far (differences in the measure's units)."""

    name: str
    arm: str  # the arm whose effect is measured
    reference: str  # the arm it is compared with
    n: int  # pairs seen
    mean: float
    low: float  # the running interval (intersection over looks)
    high: float
    verdict: str
    decided_at: int  # pairs at the first decisive look (0 while undecided)
    sd: float = math.nan
    flags: tuple[str, ...] = ()  # where the data may break the rule's assumption
    arm_diverged: tuple[int, int] = (0, 0)  # (diverged trials, finished trials) of the arm
    reference_diverged: tuple[int, int] = (0, 0)

    @property
    def decided(self) -> bool:
        """helps, hurts or no effect."""
        return self.verdict in (HELPS, HURTS, EQUIVALENT)

    @property
    def final(self) -> bool:
        """No more seeds are needed: decided, or no verdict because the arms did not learn."""
        return self.verdict != UNDECIDED


def decide_sequence(diffs: list[float] | np.ndarray, margin: float, alpha: float,
                    rule: Rule | None = None) -> tuple[float, float, str, int]:
    """Look after every pair of `diffs` (in seed order) with `rule`'s kind at `alpha`: the
    running interval at the end, the first decisive verdict and the pairs it took (0: undecided)."""
    rule = rule or Rule()
    interval = KINDS[rule.kind].interval
    d = np.asarray(diffs, dtype=float)
    low, high, verdict, at = -math.inf, math.inf, UNDECIDED, 0
    for n in range(1, len(d) + 1):
        lo, hi = interval(d[:n], alpha, rule)
        low, high = max(low, lo), min(high, hi)
        if low > high:  # an empty intersection (chance <= alpha): keep the latest interval
            low, high = lo, hi
        if verdict == UNDECIDED:
            verdict = verdict_of(low, high, margin)
            at = n if verdict != UNDECIDED else 0
    return low, high, verdict, at


def decide(values: pd.DataFrame, rule: Rule, diverged: pd.DataFrame | None = None,
           learned: dict[str, bool] | None = None) -> list[Decision]:
    """THE verdicts of `rule.comparisons` under `rule` (every view of a study calls this).

    `values`: index seed, one column per arm, the measure as a fraction (NaN where a trial is
    missing); `diverged`: the same shape, True where the trial diverged (its value is 0 then);
    `learned`: arm -> whether it learned at this budget. Each comparison gets rule.each."""
    margin = rule.margin / POINTS
    out = []
    for name, arm, ref in rule.comparisons:
        both = values[[arm, ref]].dropna().sort_index() if arm in values and ref in values else pd.DataFrame()
        d = (both[arm] - both[ref]).to_numpy(dtype=float) if len(both) else np.array([])
        low, high, verdict, at = decide_sequence(d, margin, rule.each, rule)
        if learned is not None and not learned.get(arm, True) and not learned.get(ref, True):
            verdict, at = NOT_LEARNED, 0
        div = _diverged(diverged, both.index, arm, ref)
        rests = at or len(d)  # a verdict rests on the pairs up to its decisive look
        out.append(Decision(name, arm, ref, len(d), float(d.mean()) if len(d) else math.nan, low, high, verdict, at,
                            float(d.std(ddof=1)) if len(d) > 1 else math.nan,
                            tuple(check_assumptions(d[:rests], div[:rests])),
                            _count(values, diverged, arm), _count(values, diverged, ref)))
    return out


def _diverged(diverged: pd.DataFrame | None, seeds: pd.Index, arm: str, ref: str) -> np.ndarray:
    """Per pair (seed): did either trial diverge."""
    if diverged is None or not len(seeds):
        return np.zeros(len(seeds), dtype=bool)
    cols = [c for c in (arm, ref) if c in diverged]
    return diverged.reindex(index=seeds, columns=cols).fillna(False).astype(bool).any(axis=1).to_numpy()


def _count(values: pd.DataFrame, diverged: pd.DataFrame | None, arm: str) -> tuple[int, int]:
    n = int(values[arm].notna().sum()) if arm in values else 0
    k = int(diverged[arm].fillna(False).astype(bool).sum()) if diverged is not None and arm in diverged else 0
    return k, n


def needed_arms(decisions: list[Decision]) -> list[str]:
    """The arms a comparison without its final verdict still needs, in first-seen order."""
    return list(dict.fromkeys(a for d in decisions if not d.final for a in (d.reference, d.arm)))


def first_look(rule: Rule) -> int:
    """The fewest pairs at which `rule` can give a verdict on one of its comparisons (with pairs
    that all agree): no cap below it can decide anything."""
    interval = KINDS[rule.kind].interval
    wobble = np.resize([1e-6, -1e-6], 1000)
    for n in range(1, 1001):
        if verdict_of(*interval(0.5 + wobble[:n], rule.each, rule), 0.0) != UNDECIDED:
            return n
    return 1001


def seeds_to_decide(mean: float, sd: float, margin: float, alpha: float, cap: int = 1000,
                    rule: Rule | None = None) -> float:
    """The pairs at which `rule`'s interval at `alpha`, for differences with the mean `mean` and
    the spread `sd` seen so far, would first give a verdict (inf beyond `cap`, nan without a
    spread): checked with the kind's own interval on such differences."""
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return math.nan
    if max(abs(mean), margin - abs(mean)) <= 0:
        return math.inf
    rule = rule or Rule()
    interval = KINDS[rule.kind].interval
    for n in range(2, cap + 1):
        if verdict_of(*interval(_spread(n, mean, sd), alpha, rule), margin) != UNDECIDED:
            return float(n)
    return math.inf


def _spread(n: int, mean: float, sd: float) -> np.ndarray:
    """n differences whose sample mean and sd are exactly `mean` and `sd` (alternating signs)."""
    z = np.resize([1.0, -1.0], n)
    if n % 2:
        z[-1] = 0.0
    z = z - z.mean()
    return mean + sd * z / z.std(ddof=1)
