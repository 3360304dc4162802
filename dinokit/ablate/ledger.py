"""The shared ledger behind an ablation: who holds which (arm, seed).

Every process or machine working on one study reads the same ledger (the study's storage,
dinokit/studies/storage.py): a pair is done when a trial for it is COMPLETE, taken while a live
trial holds it, and free again when its holder died (same host: its pid is gone; elsewhere: its
heartbeat stopped for `studies.storage.GRACE_S` seconds). A pair whose latest attempt failed
deterministically (user attr `deterministic`: a DinokitError such as bad data) is `broken`: not
retried as if the failure were transient, until `--retry-failed` says its cause was fixed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from dinokit.studies.workers import worker_gone

Pair = tuple[str, int]


def pair_of(t: FrozenTrial) -> Pair | None:
    """A trial's (arm, seed): its params, or the fixed params of a queued trial."""
    p = t.params if "arm" in t.params else t.system_attrs.get("fixed_params", {})
    return (p["arm"], int(p["seed"])) if "arm" in p and "seed" in p else None


def _live(t: FrozenTrial) -> bool:
    return t.state == TrialState.WAITING or (t.state == TrialState.RUNNING and not worker_gone(t))


def holder_of(study: optuna.Study, number: int, pair: Pair, wait_s: float = 30.0) -> int | None:
    """The trial that owns `pair` instead of trial `number`, or None if `number` may train it.

    Owners: a COMPLETE trial of the pair, or a live one with a lower number. Lower running trials
    that have not recorded their pair yet are waited for (milliseconds, unless their worker died).
    """
    deadline = time.monotonic() + wait_s
    while True:
        undecided = False
        for t in study.get_trials(deepcopy=False):
            p = pair_of(t)
            if t.number != number and p == pair and (t.state == TrialState.COMPLETE or
                                                     (t.number < number and _live(t))):
                return t.number
            undecided |= p is None and t.number < number and t.state == TrialState.RUNNING and not worker_gone(t)
        if not undecided or time.monotonic() > deadline:
            return None
        time.sleep(0.2)


@dataclass
class Ledger:
    """Every pair's state as one worker sees it now."""

    done: set[Pair] = field(default_factory=set)
    live: set[Pair] = field(default_factory=set)  # queued or running (maybe in another process)
    failed_now: set[Pair] = field(default_factory=set)  # failed in this run: left for the next
    attempted: set[Pair] = field(default_factory=set)  # failed at some point
    broken: set[Pair] = field(default_factory=set)  # latest attempt failed deterministically
    waiting: int = 0

    @classmethod
    def read(cls, study: optuna.Study, run_id: str) -> "Ledger":
        led = cls()
        latest: dict[Pair, FrozenTrial] = {}
        for t in study.get_trials(deepcopy=False):
            p = pair_of(t)
            led.waiting += t.state == TrialState.WAITING
            if p is None:
                continue
            if t.state == TrialState.COMPLETE:
                led.done.add(p)
            elif _live(t):
                led.live.add(p)
            elif t.state == TrialState.FAIL:
                led.attempted.add(p)
                latest[p] = t if p not in latest or latest[p].number < t.number else latest[p]
                if t.user_attrs.get("run_id") == run_id:
                    led.failed_now.add(p)
        led.broken = {p for p, t in latest.items() if t.user_attrs.get("deterministic")} - led.done
        return led

    def pending(self, pairs: list[Pair], retry_failed: bool = False) -> list[Pair]:
        """Pairs to train now; deterministic failures only with `retry_failed`."""
        skip = self.done | self.live | self.failed_now | (set() if retry_failed else self.broken)
        return [p for p in pairs if p not in skip]
