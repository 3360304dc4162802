"""Sequential studies (`ablate --until-decided`): seeds in rounds until every comparison has a verdict.

After each round the decision rule (dinokit/ablate/decide.py) looks at every comparison; the next
round trains one more seed (more when --jobs would otherwise idle) of only the arms an undecided
comparison needs. The first round trains as many seeds as the rule needs before any interval can
be finite. The study stops when all comparisons are decided, or at --max-seeds, or when the
study's training rounds have used --max-hours (no trial starts after that; a running one ends). It
lives in the same storage as any ablation, so the same command with a larger cap continues it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import optuna
import pandas as pd

from dinokit.ablate.decide import (
    LEGACY_RHO, RHO, RULE_ATTR, Decision, cs_halfwidth, decide, needed_arms, per_comparison,
)
from dinokit.ablate.steps import comparisons
from dinokit.errors import DinokitError

SEED_SPACE = 500  # the study's seed choices are fixed in storage: seed .. seed + 499
MEASURES = {"AP": "AP", "AP50": "AP50", "auc": "auc", "AP-tail": "AP_tail", "AP50-tail": "AP50_tail"}
Say = Callable[[str], None]


@dataclass(frozen=True)
class Rule:
    """What decides (`measure`, `margin` in COCO points) and when to give up (the caps)."""

    margin: float = 1.0
    measure: str = "AP"
    max_seeds: int = 20
    max_hours: float | None = None
    rho: float = RHO  # the confidence sequence's mixture (decide.py); a study keeps the one it started with

    @property
    def column(self) -> str:
        return MEASURES[self.measure]


def check_rule(rule: Rule) -> None:
    if rule.measure not in MEASURES:
        raise DinokitError(f"--decide-on must be one of {', '.join(MEASURES)}, got '{rule.measure}'")
    if not (rule.margin >= 0 and math.isfinite(rule.margin)):
        raise DinokitError(f"--margin must be a number of COCO points >= 0, got {rule.margin}")
    if not 2 <= rule.max_seeds <= SEED_SPACE:
        raise DinokitError(f"--max-seeds must be between 2 and {SEED_SPACE}, got {rule.max_seeds}")
    if rule.max_hours is not None and not rule.max_hours > 0:
        raise DinokitError(f"--max-hours must be positive, got {rule.max_hours}")


def first_look(alpha: float, rho: float = RHO) -> int:
    """The fewest pairs for which the confidence sequence at `alpha` can be finite."""
    n = 2
    while not math.isfinite(float(cs_halfwidth(n, 1.0, alpha, rho))):
        n += 1
    return n


def measure_values(done: pd.DataFrame, column: str) -> pd.DataFrame:
    """Completed trials (arm, seed, column) as a seed x arm table."""
    if done.empty or column not in done:
        return pd.DataFrame()
    return done.pivot_table(index="seed", columns="arm", values=column, aggfunc="last")


def decisions_for(data: Any, margin: float, column: str, rho: float = RHO) -> list[Decision]:
    """The verdicts of a report's data (`ReportData`) under a margin in COCO points."""
    from dinokit.ablate.report import completed

    comps = comparisons(data.arm_set)
    return decide(measure_values(completed(data.trials), column), comps, margin / 100.0, rho=rho)


def stored_rule(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(RULE_ATTR)


def _keep_rule(study: optuna.Study, rule: Rule) -> tuple[Rule, float]:
    """Record the rule in the study (a resumed study keeps its margin, measure and rho); returns
    the rule to go on with and the seconds its rounds have used so far."""
    stored = stored_rule(study)
    if stored is None:
        study.set_user_attr(RULE_ATTR, {"margin": rule.margin, "measure": rule.measure, "rho": rule.rho,
                                        "seconds": 0.0})
        return rule, 0.0
    for key in ("margin", "measure"):
        if stored[key] != getattr(rule, key):
            raise DinokitError(f"ablation '{study.study_name}' decides with --{key.replace('measure', 'decide-on')} "
                               f"{stored[key]}, not {getattr(rule, key)}: keep it, or use another --name")
    return replace(rule, rho=float(stored.get("rho", LEGACY_RHO))), float(stored.get("seconds", 0.0))


def next_round(decisions: list[Decision], done: set[tuple[str, int]], seeds: list[int], opened: int, rule: Rule,
               jobs: int) -> tuple[list[tuple[str, int]], int]:
    """The pairs of the next round and the number of seeds opened after it: every needed arm at
    every opened seed it lacks, plus one new seed (more when `jobs` exceeds the needed arms);
    the first round opens as many seeds as the rule needs for a finite interval."""
    arms = needed_arms(decisions)
    first = first_look(per_comparison(len(decisions)), rule.rho)
    step = first - opened if opened < first else max(1, math.ceil(jobs / max(1, len(arms))))
    target = min(rule.max_seeds, opened + step)
    return [(a, seeds[i]) for i in range(target) for a in arms if (a, seeds[i]) not in done], target


def run_until_decided(spec: Any, rule: Rule, jobs: int = 1, say: Say = print,
                      launch: Any = None) -> tuple[list[Decision], str]:
    """Rounds until every comparison is decided or a cap is hit; returns the last decisions
    and why the study stopped. `spec`: an AblationSpec whose seeds are the SEED_SPACE choices;
    `launch`: where each round's workers run (a `studies.launch.Launch` that waits, or local)."""
    from dinokit.ablate import study as study_mod
    from dinokit.ablate.report import completed, report_data

    check_rule(rule)
    study = study_mod.prepare(spec)
    rule, seconds = _keep_rule(study, rule)
    while True:
        _, records = study_mod.read_trials(spec.storage, spec.name)
        data = report_data(spec.name, spec.arm_set, spec.base, spec.seeds, records, {})
        done_rows = completed(data.trials)
        decisions = decisions_for(data, rule.margin, rule.column, rule.rho)
        if all(d.decided for d in decisions):
            return decisions, "every comparison is decided"
        done = set(zip(done_rows["arm"], done_rows["seed"])) if len(done_rows) else set()
        tried = {r["seed"] for r in records}
        opened = max((spec.seeds.index(s) + 1 for s in tried if s in spec.seeds), default=0)
        wanted, target = next_round(decisions, done, spec.seeds, opened, rule, jobs)
        if not wanted:
            return decisions, f"the seed cap (--max-seeds {rule.max_seeds}) is reached"
        if rule.max_hours is not None and seconds >= 3600 * rule.max_hours:
            return decisions, f"the time cap (--max-hours {rule.max_hours:g}) is reached ({seconds / 3600:.2f} h used)"
        undecided = sum(not d.decided for d in decisions)
        say(f"round: {undecided} undecided comparison(s); training {len(wanted)} trial(s), seeds up to {target}")
        spec.wanted = wanted
        spec.deadline = time.time() + 3600 * rule.max_hours - seconds if rule.max_hours is not None else None
        started = time.monotonic()
        try:
            study_mod.run(spec, jobs=jobs, say=say, launch=launch)
        finally:
            seconds += time.monotonic() - started
            study.set_user_attr(RULE_ATTR, {"margin": rule.margin, "measure": rule.measure, "rho": rule.rho,
                                            "seconds": seconds})
            spec.wanted, spec.deadline = None, None
        _, after = study_mod.read_trials(spec.storage, spec.name)
        if rule.max_hours is not None and seconds >= 3600 * rule.max_hours:
            continue  # the loop's top reports the time cap with the verdicts of what finished
        if sum(r["state"] == "COMPLETE" for r in after) == sum(r["state"] == "COMPLETE" for r in records):
            return decisions, "a round finished no trial (see the failed trials); rerun to retry"
