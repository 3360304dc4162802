"""A distribution-free confidence sequence for the mean of bounded differences: betting.

Waudby-Smith & Ramdas (2023, JRSS-B), the hedged capital process. Map each difference
d in [-B, B] to x = (d + B) / 2B in [0, 1]; for a candidate mean m (of x) two gamblers bet
on x_i - m with predictable stakes (chosen from x_1..x_{i-1} only):

    K+_t(m) = prod_{i<=t} (1 + l+_i (x_i - m)),   K-_t(m) = prod_{i<=t} (1 - l-_i (x_i - m)),
    l+_i = min(lam_i, C / m),  l-_i = min(lam_i, C / (1 - m)),  C = TRUNC < 1,

with the predictable plug-in lam_i = sqrt(2 log(2/alpha) / (sigma2_{i-1} i log(1 + i))),
sigma2_t = (1/4 + sum_{j<=t} (x_j - mu_j)^2) / (t + 1), mu_t = (1/2 + sum_{j<=t} x_j) / (t + 1).
Under "mean = m" both are nonnegative martingales for ANY distribution on [0, 1] (each factor is
>= 1 - C > 0 and has mean 1), so is theta K+ + (1 - theta) K-, and by Ville's inequality
{m : max(theta K+_t(m), (1 - theta) K-_t(m)) < 1/alpha} covers the true mean at every t at once
with probability >= 1 - alpha. K+ falls and K- rises with m, so the set is an interval; its ends
are found by bisection (the outer end of the last bracket is kept: never narrower than the set).

The price of validity for every distribution: a stake can never exceed C / m, because a
difference at -B must not ruin the gambler, so the capital grows by at most ~ C * effect / B per
seed. Against B = 100 AP a +2 AP difference needs ~ log(1/alpha) / 0.015 = 200 seeds whatever its
spread. No valid rule can avoid most of that: a seed that falls to -B with probability 2% is
unseen in 20 seeds with probability 0.98^20 = 67%.
"""

from __future__ import annotations

import math

import numpy as np

TRUNC = 0.75  # C: the largest stake as a share of what the gambler could lose (WSR suggest 1/2 or 3/4)
THETA = 0.5  # weight of the upward gambler in the hedge
ITERATIONS = 40  # bisection steps: the ends to 2B * 2^-40


def _stakes(x: np.ndarray, alpha: float) -> np.ndarray:
    """The predictable plug-in stakes lam_i (R, n) from x (R, n) in [0, 1]: lam_i uses x_1..x_{i-1}."""
    t = np.arange(1, x.shape[1] + 1, dtype=float)
    mu = (0.5 + np.cumsum(x, axis=1)) / (t + 1)  # mu_t, (R, n)
    sigma2 = (0.25 + np.cumsum((x - mu) ** 2, axis=1)) / (t + 1)  # sigma2_t
    before = np.concatenate([np.full((x.shape[0], 1), 0.25), sigma2[:, :-1]], axis=1)  # sigma2_{t-1}
    return np.sqrt(2 * math.log(2 / alpha) / (before * t * np.log1p(t)))


def _log_capital(x: np.ndarray, lam: np.ndarray, m: np.ndarray, up: bool) -> np.ndarray:
    """log K+_t(m_t) (up) or log K-_t(m_t) for each look t, m (R, n) one candidate per look:
    (R, n). The factors of seeds after t are masked out, so this costs R n^2."""
    mm = m[:, None, :]  # (R, 1, t): the candidate of look t
    with np.errstate(divide="ignore"):
        cap = TRUNC / (mm if up else 1.0 - mm)
    stake = np.minimum(lam[:, :, None], cap)  # (R, i, t)
    gain = x[:, :, None] - mm
    factor = 1.0 + stake * gain if up else 1.0 - stake * gain
    n = x.shape[1]
    mask = np.tri(n, n, dtype=bool).T  # mask[i, t]: seed i counts at look t (i <= t)
    return np.where(mask[None], np.log(factor), 0.0).sum(axis=1)


def _rejects(x: np.ndarray, lam: np.ndarray, m: np.ndarray, alpha: float, up: bool) -> np.ndarray:
    weight = THETA if up else 1.0 - THETA
    return _log_capital(x, lam, m, up) >= math.log(1.0 / (alpha * weight))


def intervals(d: np.ndarray, alpha: float, bound: float) -> np.ndarray:
    """Each look's own interval (not intersected) for differences `d` (R, n) with |d| <= bound:
    (R, n, 2), in the units of d; the widest possible is [-bound, bound]."""
    x = (np.asarray(d, dtype=float) + bound) / (2 * bound)
    lam = _stakes(x, alpha)
    ends = []
    for up in (True, False):
        # up: K+ falls with m, the rejected set is [0, low); down: K- rises, rejected (high, 1]
        lo, hi = np.zeros_like(x), np.ones_like(x)
        for _ in range(ITERATIONS):
            mid = 0.5 * (lo + hi)
            rej = _rejects(x, lam, mid, alpha, up)
            if up:
                lo, hi = np.where(rej, mid, lo), np.where(rej, hi, mid)
            else:
                lo, hi = np.where(rej, lo, mid), np.where(rej, mid, hi)
        ends.append(lo if up else hi)  # the outer end of the bracket
    return np.stack([ends[0], ends[1]], axis=-1) * (2 * bound) - bound


def running_rejections(d: np.ndarray, alpha: float, bound: float, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether the running interval has passed each point by each look, without bisection (the
    cheap path the simulations use): `below[r, t, p]`: points[p] < the running lower end at look t
    (some look <= t rejected it from below); `above`: points[p] > the running upper end. d (R, n),
    points (P,) in the units of d; both outputs (R, n, P)."""
    x = (np.asarray(d, dtype=float) + bound) / (2 * bound)
    lam = _stakes(x, alpha)
    m = (np.asarray(points, dtype=float) + bound) / (2 * bound)  # (P,)
    weight_up, weight_down = math.log(1 / (alpha * THETA)), math.log(1 / (alpha * (1 - THETA)))
    below, above = [], []
    for mp in m:
        with np.errstate(divide="ignore"):
            up = np.log1p(np.minimum(lam, TRUNC / mp) * (x - mp)) if mp > 0 else np.log1p(lam * x)
            down = np.log1p(-np.minimum(lam, TRUNC / (1 - mp)) * (x - mp)) if mp < 1 else np.log1p(lam * (1 - x))
        below.append(np.logical_or.accumulate(np.cumsum(up, axis=1) >= weight_up, axis=1))
        above.append(np.logical_or.accumulate(np.cumsum(down, axis=1) >= weight_down, axis=1))
    return np.stack(below, axis=-1), np.stack(above, axis=-1)


def first_look(alpha: float, limit: int = 10_000) -> int:
    """The fewest pairs at which any verdict is possible: the look at which differences all at
    +bound (the most favourable data) first reject a mean of 0 (`limit` if none does)."""
    below, _ = running_rejections(np.ones((1, limit)), alpha, 1.0, np.zeros(1))
    hit = np.flatnonzero(below[0, :, 0])
    return int(hit[0]) + 1 if len(hit) else limit
