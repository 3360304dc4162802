"""Running mean and sum of squared deviations of paired differences, look by look."""

from __future__ import annotations

import numpy as np


def running_moments(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sum of squared deviations Q after each look, for differences `d` (R, n): both
    (R, n). Welford's update, so Q stays exact however large the mean is against the spread."""
    n = np.arange(1, d.shape[1] + 1, dtype=float)
    mean = np.cumsum(d, axis=1) / n
    q = np.zeros_like(mean)
    for i in range(1, d.shape[1]):
        q[:, i] = q[:, i - 1] + (d[:, i] - mean[:, i - 1]) * (d[:, i] - mean[:, i])
    return mean, np.maximum(q, 0.0)
