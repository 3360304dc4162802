"""The questions a study asks (`comparisons`) and the steps of a `kind: steps` study.

A study file that declares `kind: steps` (the paper's component table, `--study paper_table`)
asks "what does each step add?": each arm against the arm above it. Every other study, and
always one made from removal flags (`ablate --no-cdn --no-dn`), asks "what does each arm change
against the baseline?". The per-arm table answers the second in every study; the step table
answers the first with descriptive paired statistics (95% paired-t interval, seeds needed).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from dinokit.ablate.arms import STEPS, ArmSet
from dinokit.ablate.stats import PairedDiff, paired_difference, seeds_needed

STEP_METRICS = ("AP", "AP50", "auc")  # the final AP, AP50 and the AP50 curve's mean height


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings whose value differs between two arms' overrides ({key: (before, after)}); a key
    one arm leaves at the base config's value is compared as None (unset)."""
    return {k: (before.get(k), after.get(k)) for k in dict.fromkeys([*before, *after])
            if before.get(k) != after.get(k)}


def legacy_steps(arm_set: ArmSet) -> bool:
    """How studies stored before `kind` existed were read: three or more arms, each changing
    exactly one setting from the arm above it, were steps (removal flags of one field included).
    Only for those stored studies, so that they keep the question they were decided on."""
    arms = arm_set.arms
    return len(arms) >= 3 and all(len(changes(a.overrides, b.overrides)) == 1 for a, b in zip(arms, arms[1:]))


def step_differences(done: pd.DataFrame, arm_set: ArmSet) -> pd.DataFrame:
    """One row per step (arm i-1 -> arm i): `step`, `change` ("field: old -> new") and for each
    of STEP_METRICS the paired difference d<col>, d<col>_low, d<col>_high, d<col>_n, d<col>_seeds
    (the columns the report's cell formatters read). `done`: one finished trial per (arm, seed)."""
    rows = []
    for before, after in zip(arm_set.arms, arm_set.arms[1:]):
        change = "; ".join(f"{key}: {_value(old)} → {_value(new)}"
                           for key, (old, new) in changes(before.overrides, after.overrides).items())
        row: dict[str, Any] = {"arm": after.name, "step": f"{before.name} → {after.name}", "change": change}
        a = done[done["arm"] == after.name].set_index("seed") if len(done) else done
        b = done[done["arm"] == before.name].set_index("seed") if len(done) else done
        for col in STEP_METRICS:
            diff = (paired_difference(a[col], b[col]) if len(a) and len(b) and col in done
                    else PairedDiff(math.nan, math.nan, math.nan, 0))
            row.update({f"d{col}": diff.mean, f"d{col}_low": diff.low, f"d{col}_high": diff.high,
                        f"d{col}_n": diff.n, f"d{col}_seeds": seeds_needed(diff.mean, diff.sd),
                        f"d{col}_resolved": diff.resolved})
        rows.append(row)
    return pd.DataFrame(rows)


def _value(v: Any) -> str:
    return "base" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))


def comparisons(arm_set: ArmSet) -> list[tuple[str, str, str]]:
    """The questions a study asks, as (name, arm, reference): each step of a `kind: steps` study
    (the arm against the arm above it), otherwise each arm against the baseline."""
    if arm_set.kind == STEPS:
        arms = arm_set.arms
        return [(f"{a.name} → {b.name}", b.name, a.name) for a, b in zip(arms, arms[1:])]
    return [(f"{a} vs {arm_set.baseline}", a, arm_set.baseline) for a in arm_set.names if a != arm_set.baseline]
