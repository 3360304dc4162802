"""Lai's t-mixture confidence sequence: valid at every number of seeds for normal differences.

For paired differences d_1..d_n with mean m and Q = sum (d_i - m)^2, the hypothesis "mean = mu"
has the test martingale (the spread integrated out with the scale-invariant measure, the
standardised effect mixed over N(0, 1/rho); Lai 1976)

    M_n(mu) = sqrt(rho / (n + rho)) * (1 - S^2 / ((n + rho) V))^(-n/2),
    S = sum (d_i - mu),  V = sum (d_i - mu)^2,

so by Ville's inequality P(exists n: M_n(mu) >= 1/alpha) <= alpha, and {mu: M_n(mu) < 1/alpha}
is the interval m +- sqrt(k Q / (n (n - k))), c = (alpha^2 rho / (n + rho))^(1/n),
k = (1 - c)(n + rho) (all of R while n <= k). It needs no cap: a study may always go on.
"""

from __future__ import annotations

import math

import numpy as np

from dinokit.ablate.rules.moments import running_moments

RHO = 0.25  # the mixture's precision: finite from 5 seeds at 1% (4 at 5%)


def cs_halfwidth(n: np.ndarray | int, q: np.ndarray | float, alpha: float, rho: float = RHO) -> np.ndarray:
    """Half-width of the confidence sequence after n pairs whose differences have sum of
    squared deviations `q` (inf while it is unbounded, e.g. n < 2). Broadcasts over arrays."""
    n = np.asarray(n, dtype=float)
    q = np.asarray(q, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = np.exp(np.log(alpha * alpha * rho / (n + rho)) / n)
        k = (1.0 - c) * (n + rho)
        half = np.sqrt(k * q / (n * (n - k)))
    return np.where((n >= 2) & (n > k), half, np.inf)


def unit_halfwidth(n: np.ndarray | int, alpha: float, rho: float = RHO) -> np.ndarray:
    """The half-width in units of the sample sd s_n (Q = (n - 1) s_n^2): the multiplier the
    report's 'this rule would need' and the README's widths are stated in."""
    n = np.asarray(n, dtype=float)
    return cs_halfwidth(n, np.maximum(n - 1.0, 0.0), alpha, rho)


def first_look(alpha: float, rho: float = RHO) -> int:
    """The fewest pairs at which the interval can be finite."""
    n = 2
    while not math.isfinite(float(unit_halfwidth(n, alpha, rho))):
        n += 1
    return n


def intervals(d: np.ndarray, alpha: float, rho: float = RHO) -> np.ndarray:
    """Each look's own interval (not intersected) for differences `d` (R, n): (R, n, 2)."""
    mean, q = running_moments(d)
    n = np.arange(1, d.shape[1] + 1, dtype=float)
    half = cs_halfwidth(n[None, :], q, alpha, rho)
    return np.stack([mean - half, mean + half], axis=-1)
