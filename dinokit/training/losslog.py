"""Loss terms for the logs, read on the host once per logging interval, not once per term and step.

Reading a CUDA tensor's value (`float(t)`, `.item()`) waits for every kernel queued before it:
doing that for each of ~10 loss terms after every step keeps the host from queueing the next
step while the device works. Each step's terms are stacked into one small tensor where they
are; `drain` brings all buffered steps to the host in one copy, with exactly the values that
`float(term)` gives (fp32 terms, integer draw indices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LOG_EVERY = 10  # steps between reads, besides the console's lines, evaluations and checkpoints


@dataclass
class LoggedStep:
    step: int
    epoch: int
    lr: float
    values: dict[str, float]  # every one-element term of the criterion's output, "loss" included


class LossLog:
    """The loss terms of the steps since the last `drain`, still on their device."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, int, float, list[str], Tensor]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, step: int, epoch: int, lr: float, losses: dict[str, Tensor]) -> None:
        names = [k for k, v in losses.items() if torch.is_tensor(v) and v.numel() == 1]
        terms = torch.stack([losses[k].detach().reshape(()).float() for k in names])
        self._pending.append((step, epoch, lr, names, terms))

    def drain(self) -> list[LoggedStep]:
        """Every buffered step with its values as Python floats (one device-to-host copy)."""
        if not self._pending:
            return []
        flat = torch.cat([p[4] for p in self._pending]).cpu().tolist()
        out, start = [], 0
        for step, epoch, lr, names, _ in self._pending:
            out.append(LoggedStep(step, epoch, lr, dict(zip(names, flat[start:start + len(names)]))))
            start += len(names)
        self._pending = []
        return out


def fold(rows: list[LoggedStep], sums: dict[str, float], curve: list[list[float]], curve_every: int) -> int:
    """Add each finite step's terms to `sums` (a skipped step must not turn the logged mean into
    NaN) and the curve's points (step 1 and every `curve_every`-th) to `curve`; returns the number
    of steps added to `sums`."""
    added = 0
    for row in rows:
        if math.isfinite(row.values["loss"]):
            for k, v in row.values.items():
                sums[k] = sums.get(k, 0.0) + v
            added += 1
        if row.step % curve_every == 0 or row.step == 1:
            curve.append([row.step, row.values["loss"]])
    return added


def merge(parts: list[tuple[dict[str, float], int]]) -> tuple[dict[str, float], int]:
    """Every process's (sums, count) since the last evaluation, added up (DDP gathers them)."""
    sums: dict[str, float] = {}
    for part, _ in parts:
        for k, v in part.items():
            sums[k] = sums.get(k, 0.0) + v
    return sums, sum(c for _, c in parts)
