"""A study's rule and the one function that gives its verdicts: `decide(values, rule, ...)`.

A sequential study stores one `Rule` when it starts (kind, alpha, rho, margin, measure, its
comparisons, the seed cap, the first look); every verdict the studio prints comes from `decide`
under that stored rule: the rounds, the stop line, the terminal, report.md/html, the captions and
`ablate report`. The rule's `kind` selects how the interval for a comparison's mean paired
difference is computed at each look (`KINDS`: adding a kind is one entry there); what is built on
it is shared: the running intersection over looks, the first decisive look, the verdict.

The kinds (dinokit/ablate/rules/, one module each, with their simulations in tests/):
'groupseq' (the default) is a group-sequential design for the study's seed cap: repeated t
intervals with boundaries calibrated, before the first seed, for a look after every seed up to the
cap (exact for independent normal paired differences; where no such design is narrower than the
t-mixture at every look it computes as the t-mixture). 'tmixture' is Lai's t-mixture confidence
sequence (normal differences, valid at any number of seeds, so its cap may be raised later).
'bounded' is a betting confidence sequence valid for any distribution of differences within
+-100 points, wide at the spreads of a few AP points. The study's K comparisons each get alpha / K
(Bonferroni): every interval covers its true difference at every look with probability
>= 1 − alpha together, whatever the dependence between comparisons that share an arm.

Where a comparison's data speaks against normality (skew, an outlying or a diverged seed:
rules/check.py), its verdict says so and shows the distribution-free (bounded) interval beside it.

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

from dinokit.ablate import rules
from dinokit.ablate.rules import groupseq
from dinokit.ablate.rules.tmixture import cs_halfwidth

ALPHA = 0.05
BOUND = 1.0  # measures are fractions in [0, 1]: a paired difference lies within +-1 (the bounded rule)
RHO = 0.25  # prior precision of the standardised effect: the interval is finite from 5 seeds at 1% (4 at 5%)
LEGACY_RHO = 1.0  # studies stored without a rho ran under this one (finite only from 6 seeds at 1%)
RULE_ATTR = "dinokit_rule"  # a sequential study's stored rule (Rule.to_dict) in its storage
POINTS = 100.0  # measures are fractions in storage; a rule's margin is in COCO points
MEASURES = {"AP": "AP", "AP50": "AP50", "auc": "auc", "AP-tail": "AP_tail", "AP50-tail": "AP50_tail"}
HELPS, HURTS, EQUIVALENT, UNDECIDED = "helps", "hurts", "no effect", "undecided"
NOT_LEARNED = "no verdict"  # neither arm learned at this budget: the numbers answer no question
Comparison = tuple[str, str, str]  # (name, arm, reference)


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
    kind: str = rules.DEFAULT
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


@dataclass(frozen=True)
class Kind:
    """What one kind of rule is (its intervals are computed in dinokit/ablate/rules/)."""

    anytime: bool  # valid at any number of seeds: a larger --max-seeds may continue a stored study
    describe: Callable[[Rule], str]  # for the report: what the interval is
    assumption: str  # what its error rates rest on


def _describe_groupseq(rule: Rule) -> str:
    if rules.effective_kind("groupseq", rule.each, rule.max_seeds, rule.rho) != "groupseq":
        return (f"Lai's t-mixture confidence sequence (rho={rule.rho:g}; no group-sequential design for cap "
                f"{rule.max_seeds} at this alpha is narrower at every look)")
    return (f"a group-sequential repeated t interval (Pocock boundary calibrated for a look after every seed "
            f"from {groupseq.FIRST} up to the cap of {rule.max_seeds})")


KINDS: dict[str, Kind] = {
    "groupseq": Kind(False, _describe_groupseq, rules.ASSUMES["groupseq"]),
    "tmixture": Kind(True, lambda r: f"an always-valid confidence sequence (Lai's t-mixture, rho={r.rho:g})",
                     rules.ASSUMES["tmixture"]),
    "bounded": Kind(True, lambda r: "a distribution-free betting confidence sequence (Waudby-Smith & Ramdas "
                    "2023) for differences within ±100 points", "independent paired differences (any distribution)"),
}


def _cap(rule: Rule, n: int) -> int:
    """The cap the intervals are computed for: the rule's (an anytime rule's may be exceeded)."""
    return rule.max_seeds if not KINDS[rule.kind].anytime else max(rule.max_seeds, n, 2)


def check_assumptions(diffs: np.ndarray, diverged: np.ndarray, seeds: list[Any] | None = None) -> list[str]:
    """What in a comparison's data its rule's normality may not cover (rules/check.py): skew, an
    outlying seed, a diverged seed (it scores 0: an outlier no normal model expects). The
    bounded rule assumes no shape, so nothing is flagged for it."""
    return rules.assumption_flags(diffs, diverged, seeds)


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
    free: tuple[float, float] | None = None  # the bounded rule's interval, shown where `flags` are raised

    @property
    def decided(self) -> bool:
        """helps, hurts or no effect."""
        return self.verdict in (HELPS, HURTS, EQUIVALENT)

    @property
    def final(self) -> bool:
        """No more seeds are needed: decided, or no verdict because the arms did not learn."""
        return self.verdict != UNDECIDED


_CODES = {rules.HELPS: HELPS, rules.HURTS: HURTS, rules.EQUIVALENT: EQUIVALENT, rules.UNDECIDED: UNDECIDED}


def decide_sequence(diffs: list[float] | np.ndarray, margin: float, alpha: float,
                    rule: Rule | None = None, kind: str | None = None) -> tuple[float, float, str, int]:
    """Look after every pair of `diffs` (in seed order) with `rule`'s kind (or `kind`) at
    `alpha`: the running interval at the end, the first decisive verdict and the pairs it took
    (0: undecided)."""
    rule = rule or Rule()
    kind = kind or rule.kind
    d = np.asarray(diffs, dtype=float)
    if not len(d):
        return -math.inf, math.inf, UNDECIDED, 0
    cap = _cap(rule, len(d)) if kind == rule.kind else max(rule.max_seeds, len(d), 2)
    run = rules.running_intervals(kind, d, alpha, cap=cap, rho=rule.rho, bound=BOUND)  # (n, 2)
    code, at = rules.first_verdicts(run[None], margin)
    return float(run[-1, 0]), float(run[-1, 1]), _CODES[int(code[0])], int(at[0])


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
        flags = tuple(check_assumptions(d[:rests], div[:rests], list(both.index[:rests]))) \
            if rule.kind != "bounded" else ()
        free = decide_sequence(d[:rests], margin, rule.each, rule, kind="bounded")[:2] if flags else None
        out.append(Decision(name, arm, ref, len(d), float(d.mean()) if len(d) else math.nan, low, high, verdict, at,
                            float(d.std(ddof=1)) if len(d) > 1 else math.nan, flags,
                            _count(values, diverged, arm), _count(values, diverged, ref), free))
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
    return rules.first_look(rule.kind, rule.each, cap=rule.max_seeds, rho=rule.rho, bound=BOUND)


def seeds_to_decide(mean: float, sd: float, margin: float, alpha: float, cap: int = 1000,
                    rule: Rule | None = None) -> float:
    """The pairs at which `rule`'s interval at `alpha`, for differences with the mean `mean` and
    the spread `sd` seen so far, would first give a verdict (inf beyond `cap`, or beyond the
    rule's own cap where it is set for one; nan without a spread)."""
    rule = rule or Rule()
    cap = min(cap, rule.max_seeds) if not KINDS[rule.kind].anytime else cap
    return rules.seeds_to_decide(rule.kind, mean, sd, margin, alpha, cap=cap, rho=rule.rho, bound=BOUND)
