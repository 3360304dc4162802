"""The studio's decision rules: an interval for a comparison's mean paired difference after each seed.

Three rules, one module each, all giving intervals that cover the true mean difference at every
look at once with probability >= 1 - alpha (alpha per comparison: decide.py splits the study's
alpha over its comparisons):

- `groupseq` (groupseq.py): repeated t intervals with boundaries calibrated for a look after
  every seed up to the study's cap, fixed before the first seed. Exact for normal differences;
  the narrowest of the three there, so the default.
- `tmixture` (tmixture.py): Lai's t-mixture confidence sequence; normal differences, any number
  of seeds (no cap). groupseq falls back to it where its design would be wider at some look
  (caps above ~30) or is not calibrated (alpha outside groupseq's range): `effective_kind`.
- `bounded` (bounded.py): a betting confidence sequence, valid for every distribution of
  differences within +-bound, at the price of width.

check.py flags the data on which the normal rules are not to be trusted (skew, an outlying seed,
divergence). Differences are in the measure's units; the verdict of a comparison is its first
decisive look of the running (intersected) interval: above 0 helps, below 0 hurts, inside
(-margin, +margin) no effect.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from dinokit.ablate.rules import bounded, groupseq, tmixture
from dinokit.ablate.rules.check import assumption_flags
from dinokit.errors import DinokitError

KINDS = ("groupseq", "tmixture", "bounded")
DEFAULT = "groupseq"
ASSUMES = {"groupseq": "independent, normally distributed paired differences (a cap fixed before the first seed)",
           "tmixture": "independent, normally distributed paired differences",
           "bounded": "independent paired differences within +-bound (any distribution)"}
HELPS, HURTS, EQUIVALENT, UNDECIDED = 1, 2, 3, 0  # verdict codes of the vectorised paths

__all__ = ["KINDS", "DEFAULT", "ASSUMES", "running_intervals", "first_look", "seeds_to_decide",
           "assumption_flags", "effective_kind", "look_intervals", "intersect", "first_verdicts",
           "simulate_verdicts", "first_decisive", "HELPS", "HURTS", "EQUIVALENT", "UNDECIDED"]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DinokitError(f"unknown decision rule '{kind}': use one of {', '.join(KINDS)}")


def effective_kind(kind: str, alpha: float, cap: int, rho: float = tmixture.RHO) -> str:
    """The rule that actually computes: groupseq becomes tmixture where its design is not
    calibrated or not narrower than the t-mixture at every look (caps above ~30; this depends on
    alpha and the cap only, never on data, so the choice costs no validity)."""
    _check_kind(kind)
    if kind == "groupseq" and not _groupseq_applies(float(alpha), int(cap), float(rho)):
        return "tmixture"
    return kind


@lru_cache(maxsize=256)
def _groupseq_applies(alpha: float, cap: int, rho: float) -> bool:
    if not groupseq.calibrated(alpha, cap):
        return False
    n = np.arange(groupseq.FIRST, cap + 1)
    return bool(np.all(groupseq.unit_halfwidth(alpha, cap)[n - 1] <= tmixture.unit_halfwidth(n, alpha, rho)))


def look_intervals(kind: str, d: np.ndarray, alpha: float, *, cap: int, rho: float = tmixture.RHO,
                   bound: float = 1.0) -> np.ndarray:
    """Each look's own interval for many sequences of differences d (R, n): (R, n, 2), not
    intersected; +-inf where not finite."""
    d = np.asarray(d, dtype=float)
    kind = effective_kind(kind, alpha, cap, rho)
    if kind == "groupseq" and d.shape[1] > cap:
        raise DinokitError(f"{d.shape[1]} pairs exceed the cap of {cap} the group-sequential design was "
                           "calibrated for: keep the cap, or start a new rule")
    if kind == "bounded":
        if not bound > 0:
            raise DinokitError(f"the bound of the differences must be positive, got {bound}")
        worst = float(np.max(np.abs(d))) if d.size else 0.0
        if worst > bound:
            raise DinokitError(f"a paired difference of {worst:g} exceeds the bound {bound:g} of the bounded rule")
        return bounded.intervals(d, alpha, bound)
    if kind == "groupseq":
        return groupseq.intervals(d, alpha, cap)
    return tmixture.intervals(d, alpha, rho)


def intersect(raw: np.ndarray) -> np.ndarray:
    """The running intersection of each look's interval with the earlier ones (R, n, 2) -> same
    shape; where it would be empty (a miss, probability <= alpha) the latest interval is kept."""
    out = raw.copy()
    for i in range(1, raw.shape[1]):
        low = np.maximum(out[:, i - 1, 0], raw[:, i, 0])
        high = np.minimum(out[:, i - 1, 1], raw[:, i, 1])
        empty = low > high
        out[:, i, 0] = np.where(empty, raw[:, i, 0], low)
        out[:, i, 1] = np.where(empty, raw[:, i, 1], high)
    return out


def running_intervals(kind: str, diffs: np.ndarray, alpha: float, *, cap: int, rho: float = tmixture.RHO,
                      bound: float = 1.0) -> np.ndarray:
    """(n, 2): the running interval after each pair 1..n of `diffs` (seed order), intersected
    over looks (an empty intersection keeps the latest interval); +-inf where not yet finite.
    `cap`: the study's seed cap fixed before the first seed (groupseq is calibrated for a look
    after every seed up to it; more pairs than `cap` is an error for groupseq, the others are
    valid at any n). `bound`: |d| <= bound for the bounded rule (AP in [0, 1] -> 1), whose
    interval is never wider than [-bound, bound], so finite from the first pair."""
    d = np.asarray(diffs, dtype=float).reshape(1, -1)
    if d.shape[1] == 0:
        return np.empty((0, 2))
    if not np.all(np.isfinite(d)):
        raise DinokitError("paired differences must be finite numbers (count a diverged trial as an outcome)")
    return intersect(look_intervals(kind, d, alpha, cap=cap, rho=rho, bound=bound))[0]


def first_look(kind: str, alpha: float, *, cap: int, rho: float = tmixture.RHO, bound: float = 1.0) -> int:
    """The fewest pairs at which any verdict is possible (the interval can be finite / decisive)."""
    kind = effective_kind(kind, alpha, cap, rho)
    if kind == "groupseq":
        return groupseq.FIRST
    if kind == "bounded":
        return bounded.first_look(alpha)
    return tmixture.first_look(alpha, rho)


def first_verdicts(run: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The first decisive look of running intervals (R, n, 2): verdict codes (R,) and the pairs
    it took (R,), 0 where undecided. A look is decisive when its interval is above 0 (helps),
    below 0 (hurts) or inside (-margin, +margin) (no effect), checked in that order."""
    low, high = run[..., 0], run[..., 1]
    helps, hurts = low > 0, high < 0
    same = (-margin < low) & (high < margin) if margin > 0 else np.zeros_like(helps)
    return first_decisive(helps, hurts, same)


def first_decisive(helps: np.ndarray, hurts: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Verdict codes (R,) and pairs (R,) of the first look where any of helps / hurts / no effect
    (each (R, n) booleans) holds, in that order of precedence; 0 pairs where none ever does."""
    decisive = helps | hurts | same  # (R, n)
    any_ = decisive.any(axis=1)
    at = np.where(any_, decisive.argmax(axis=1), 0)
    r = np.arange(len(decisive))
    code = np.where(helps[r, at], HELPS, np.where(hurts[r, at], HURTS, EQUIVALENT))
    return np.where(any_, code, UNDECIDED), np.where(any_, at + 1, 0)


def simulate_verdicts(kind: str, d: np.ndarray, alpha: float, margin: float, *, cap: int,
                      rho: float = tmixture.RHO, bound: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Verdict codes (R,) and pairs used (R,) for many studies d (R, n) at once: the t rules
    through their intervals, the bounded rule by testing only 0 and +-margin (no bisection),
    which gives the same verdicts except where the running intersection would be empty."""
    d = np.asarray(d, dtype=float)
    if effective_kind(kind, alpha, cap, rho) == "bounded":
        below, above = bounded.running_rejections(d, alpha, bound, np.array([0.0, -margin, margin]))
        same = below[..., 1] & above[..., 2] if margin > 0 else np.zeros_like(below[..., 0])
        return first_decisive(below[..., 0], above[..., 0], same)
    return first_verdicts(intersect(look_intervals(kind, d, alpha, cap=cap, rho=rho, bound=bound)), margin)


def seeds_to_decide(kind: str, mean: float, sd: float, margin: float, alpha: float, *, cap: int,
                    rho: float = tmixture.RHO, bound: float = 1.0) -> float:
    """Pairs at which the interval centred on `mean` with the spread `sd` seen so far would first
    give a verdict (inf if not by `cap`, nan without a spread): its half-width must fall below
    |mean| (helps/hurts) or below margin - |mean| (no effect). For the bounded rule the interval
    is that of differences alternating mean + sd, mean - sd (clipped to the bound)."""
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return math.nan
    distance = max(abs(mean), margin - abs(mean))
    if distance <= 0:
        return math.inf
    kind = effective_kind(kind, alpha, cap, rho)
    n = np.arange(1, cap + 1)
    if kind == "bounded":
        d = np.clip(mean + sd * np.where(n % 2 == 1, 1.0, -1.0), -bound, bound)
        code, at = simulate_verdicts(kind, d[None], alpha, margin, cap=cap, bound=bound)
        return float(at[0]) if code[0] != UNDECIDED else math.inf
    unit = groupseq.unit_halfwidth(alpha, cap) if kind == "groupseq" else tmixture.unit_halfwidth(n, alpha, rho)
    ok = np.flatnonzero(unit * sd < distance)
    return float(n[ok[0]]) if len(ok) else math.inf
