"""Does a comparison's data look normal enough for the t-based rules? Skew, an outlying seed, divergence.

The t-mixture and the group-sequential rule are exact for independent normal paired
differences; skewed differences or one seed far from the rest (a diverged or half-diverged
trial) break them (tests/test_rules_sim.py measures how much). Each check compares a statistic
that does not depend on the mean or the spread with its own null distribution under normality at
the same number of pairs (Monte Carlo, fixed seed, cached), and flags only beyond that
distribution's 1 - LEVEL quantile, so normal data is flagged rarely at any n (about
2 * LEVEL at most, both checks together).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

LEVEL = 0.01  # each check's false-flag rate on normal data
MIN_PAIRS = 5  # below this neither statistic says anything
SIMS = 20_000
SEED = 3401
MAD_SD = 1.482602218505602  # the sd of a normal per unit of median absolute deviation


def skewness(d: np.ndarray) -> np.ndarray:
    """Adjusted Fisher-Pearson sample skewness G1 of each row of d (R, n): (R,)."""
    n = d.shape[1]
    c = d - d.mean(axis=1, keepdims=True)
    m2, m3 = (c ** 2).mean(axis=1), (c ** 3).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        g1 = m3 / m2 ** 1.5
    return np.nan_to_num(g1 * np.sqrt(n * (n - 1)) / (n - 2))


def robust_z(d: np.ndarray) -> np.ndarray:
    """|d - median| in robust sd (MAD * 1.4826) per element of d (R, n): (R, n); where the MAD
    is 0 (half the seeds tie) the mean absolute deviation from the median stands in."""
    dev = np.abs(d - np.median(d, axis=1, keepdims=True))
    scale = MAD_SD * np.median(dev, axis=1, keepdims=True)
    scale = np.where(scale > 0, scale, 1.2533 * dev.mean(axis=1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, dev / scale, 0.0)


@lru_cache(maxsize=128)
def thresholds(n: int) -> tuple[float, float]:
    """The (1 - LEVEL) quantiles of |G1| and of the largest robust z among n normal differences."""
    z = np.random.default_rng([SEED, n]).standard_normal((SIMS, n))
    return (float(np.quantile(np.abs(skewness(z)), 1 - LEVEL)),
            float(np.quantile(robust_z(z).max(axis=1), 1 - LEVEL)))


def flags_matrix(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both checks on every row of d (R, n) at once: (skewed (R,), outlier (R,)) booleans."""
    n = d.shape[1]
    if n < MIN_PAIRS:
        return np.zeros(len(d), bool), np.zeros(len(d), bool)
    skew_limit, z_limit = thresholds(n)
    return np.abs(skewness(d)) > skew_limit, robust_z(d).max(axis=1) > z_limit


def assumption_flags(diffs: np.ndarray, diverged: np.ndarray | None = None,
                     seeds: Sequence[object] | None = None) -> list[str]:
    """What speaks against normal paired differences in one comparison, as short phrases (empty:
    nothing flagged). `diverged`: a boolean per difference, true where either trial diverged;
    `seeds`: the seeds' names for the messages (else 'pair i', 1-based in the given order)."""
    d = np.asarray(diffs, dtype=float).ravel()
    for name, other in (("diverged", diverged), ("seeds", seeds)):
        if other is not None and len(other) != len(d):
            raise ValueError(f"{name} has {len(other)} entries for {len(d)} paired differences")
    names = [f"seed {s}" for s in seeds] if seeds is not None else [f"pair {i + 1}" for i in range(len(d))]
    out: list[str] = []
    if diverged is not None:
        bad = [names[i] for i in np.flatnonzero(np.asarray(diverged, dtype=bool))]
        if bad:
            out.append(f"diverged {', '.join(bad)}")
    finite = np.flatnonzero(np.isfinite(d))  # a missing pair is not evidence either way
    d, names = d[finite], [names[i] for i in finite]
    if len(d) < MIN_PAIRS:
        return out
    skewed, outlier = flags_matrix(d[None])
    if skewed[0]:
        out.append(f"skewed (sample skewness {float(skewness(d[None])[0]):+.1f})")
    if outlier[0]:
        z = robust_z(d[None])[0]
        i = int(np.argmax(z))
        out.append(f"outlying {names[i]} ({z[i]:.1f} robust sd from the median)")
    return out
