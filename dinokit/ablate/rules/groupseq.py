"""A group-sequential design for a seed cap fixed before the first seed: repeated confidence intervals.

With a cap N known in advance, the study looks after seeds first..N, and at look n the interval is

    mean_n +- c_n * s_n / sqrt(n)

(s_n the sample sd of the n paired differences). Under independent normal differences the t
statistics T_n = sqrt(n) (mean_n - mu) / s_n of all looks have a joint law free of mu and the
spread, so one Monte Carlo run of standard normal sequences calibrates the boundaries c_n for
every study: P(some look n in first..N has |T_n| > c_n) <= alpha, i.e. the intervals cover the
true mean at every look at once (Jennison & Turnbull, Group Sequential Methods, ch. 9).
Looking less often (rounds that add several seeds) only removes chances to miss: conservative.

The boundary shape is Wang & Tsiatis's power family on the normal scale, carried to the t scale
through each look's nominal level: c_n = F^-1_{t, n-1}(Phi(C (n/N)^(DELTA - 1/2))); DELTA = 1/2 is
Pocock's constant nominal level, DELTA = 0 O'Brien & Fleming's. C is the Monte Carlo
(1 - alpha) quantile of max_n Phi^-1(F_{t,n-1}(|T_n|)) / (n/N)^(DELTA - 1/2), taken at an order
statistic that lies above the true quantile with 99% probability (so the calibration errs
towards wider intervals). The simulation uses a fixed seed: the same cap and alpha give the
same boundaries on every machine and in every process (cached per process: about 0.1-0.5 s of
CPU for caps 20-50).

Pocock's shape with a first look at 4 seeds is chosen by benchmarks/rules_shape.py: within 1-2%
of the fewest mean seeds over the shapes tried at effects of 1-2 x margin (alpha 5% and 1%, cap
20), and, unlike the O'Brien-Fleming-like shapes, narrower than the t-mixture (rho 1/4) at every
look for caps up to 30, so on the same data it never needs more seeds for a verdict.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import special, stats

from dinokit.ablate.rules.moments import running_moments

DELTA = 0.5  # boundary shape: Pocock (one nominal level at every look); chosen by benchmarks/rules_shape.py
FIRST = 4  # the design's first look (pairs); chosen with DELTA
SIMS = 100_000  # Monte Carlo sequences per calibration
SEED = 34  # the calibration's fixed random seed
MAX_CAP = 100  # above this the calibration would cost seconds (and the t-mixture is narrower anyway)
MIN_TAIL = 50  # sequences beyond the boundary the calibration needs: alpha >= MIN_TAIL / SIMS
MAX_ALPHA = 0.1  # the largest alpha calibrated (per comparison; larger ones use the t-mixture)
FLOOR = float(special.ndtri(1 - MAX_ALPHA / 2))  # C(alpha) >= this for alpha <= MAX_ALPHA (the last look alone)


def calibrated(alpha: float, cap: int, first: int = FIRST) -> bool:
    """Whether this design exists for (alpha, cap); where it does not, the rules fall back to the
    t-mixture (valid at any cap and alpha, wider)."""
    return 2 <= first <= cap <= MAX_CAP and MIN_TAIL / SIMS <= alpha <= MAX_ALPHA


@lru_cache(maxsize=32)
def _null_maxima(cap: int, first: int, delta: float) -> np.ndarray:
    """Each simulated null sequence's max over looks first..cap of Phi^-1(F_t(|T_n|)) / w_n,
    sorted ascending (SIMS,): the C at which that sequence would just touch the boundary.
    Exact above FLOOR (the alphas that matter); smaller values are reported as FLOOR."""
    rng = np.random.default_rng([SEED, cap, first])
    n = np.arange(first, cap + 1, dtype=float)
    w = (n / cap) ** (delta - 0.5)
    skip = -special.stdtrit(n - 1, special.ndtr(-FLOOR * w))  # |T_n| below this cannot reach FLOOR
    out = np.full(SIMS, FLOOR)
    chunk = max(1, 2_000_000 // cap)
    for start in range(0, SIMS, chunk):
        # float32 until the few entries that matter: 1e-6 relative error on |T_n| is far below the
        # Monte Carlo error, and it is what makes a calibration cost a fraction of a second
        z = rng.standard_normal((min(chunk, SIMS - start), cap), dtype=np.float32)
        s1, s2 = np.cumsum(z, axis=1)[:, first - 1:], np.cumsum(z * z, axis=1)[:, first - 1:]
        n32 = n.astype(np.float32)
        q = s2 - s1 * s1 / n32  # standard normal draws: the textbook formula loses nothing here
        t = np.abs(s1) * np.sqrt((n32 - 1) / (n32 * q))  # |T_n|, (chunk, looks)
        rows, cols = np.nonzero(t > skip)
        tail = special.stdtr(n[cols] - 1, -t[rows, cols].astype(float))
        score = -special.ndtri(tail) / w[cols]
        np.maximum.at(out, start + rows, score)
    out.sort()
    out.flags.writeable = False  # cached: shared by every caller
    return out


def critical(alpha: float, cap: int, first: int = FIRST, delta: float = DELTA) -> float:
    """The calibrated constant C (normal scale) of the boundaries for this alpha and cap."""
    maxima = _null_maxima(cap, first, float(delta))
    k = max(1, int(stats.binom.ppf(0.01, SIMS, alpha)))  # k-th largest: above the quantile w.p. >= 99%
    return float(maxima[SIMS - k])


@lru_cache(maxsize=256)
def _multipliers(alpha: float, cap: int, first: int, delta: float) -> np.ndarray:
    n = np.arange(1, cap + 1, dtype=float)
    c = critical(alpha, cap, first, delta)
    w = (n / cap) ** (delta - 0.5)
    with np.errstate(invalid="ignore"):
        mult = -special.stdtrit(np.maximum(n - 1, 1), special.ndtr(-c * w))
    mult[: first - 1] = np.inf
    mult.flags.writeable = False
    return mult


def multipliers(alpha: float, cap: int, first: int = FIRST, delta: float = DELTA) -> np.ndarray:
    """c_n for looks n = 1..cap (cap,): the half-width in units of s_n / sqrt(n); inf before the
    first look."""
    if not calibrated(alpha, cap, first):
        raise ValueError(f"no group-sequential design for alpha {alpha:g} and cap {cap}")
    return _multipliers(float(alpha), int(cap), int(first), float(delta))


def unit_halfwidth(alpha: float, cap: int, first: int = FIRST, delta: float = DELTA) -> np.ndarray:
    """The half-width in units of the sample sd s_n at looks 1..cap (cap,)."""
    n = np.arange(1, cap + 1, dtype=float)
    return multipliers(alpha, cap, first, delta) / np.sqrt(n)


def intervals(d: np.ndarray, alpha: float, cap: int, first: int = FIRST, delta: float = DELTA) -> np.ndarray:
    """Each look's own interval (not intersected) for differences `d` (R, n <= cap): (R, n, 2)."""
    mean, q = running_moments(d)
    n = np.arange(1, d.shape[1] + 1, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(q / np.maximum(n - 1, 1))
    unit = unit_halfwidth(alpha, cap, first, delta)[: d.shape[1]]
    with np.errstate(invalid="ignore"):
        half = np.where(np.isinf(unit), np.inf, unit * s)  # inf before the first look, even where s = 0
    return np.stack([mean - half, mean + half], axis=-1)

