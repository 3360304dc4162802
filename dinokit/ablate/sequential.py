"""Sequential studies (`ablate --until-decided`): seeds in rounds until every comparison has a verdict.

The study's rule (decide.Rule: kind, alpha, rho, margin, measure, comparisons, seed cap, first
look) is stored once, when the study starts, and is the only source of its verdicts: the rounds
here, the stop line, the terminal, the report and `ablate report` all read it back. After each
round the rule looks at every comparison; the next round trains one more seed (more when --jobs
would otherwise idle) of only the arms a comparison without its verdict needs. The first round
trains as many seeds as the rule needs before any verdict is possible. The study stops when every
comparison has its verdict (or no verdict: its arms did not learn), at the seed cap, when a
needed trial failed deterministically, or when the study's trials have used --max-hours (summed
over its trials from their own records, so every machine sharing the storage sees the same tally
and a killed round loses none of it; no trial starts after that, a running one ends).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import optuna

from dinokit.ablate.decide import KINDS, MEASURES, RULE_ATTR, Comparison, Decision, Rule, needed_arms
from dinokit.ablate.records import completed, deterministic_failures, report_data
from dinokit.ablate.steps import comparisons
from dinokit.ablate.verdicts import decisions_for, stop_reason
from dinokit.errors import DinokitError
from dinokit.studies.trials import trial_seconds

SEED_SPACE = 500  # the study's seed choices are fixed in storage: seed .. seed + 499
Say = Callable[[str], None]


def check_rule(rule: Rule, cap: bool = True) -> None:
    """Every input error of a rule, before anything is created or trained (`cap`: its seed cap
    too, which a rule given on `ablate report` of a fixed-seed study does not have)."""
    if rule.measure not in MEASURES:
        raise DinokitError(f"--decide-on must be one of {', '.join(MEASURES)}, got '{rule.measure}'")
    if not (rule.margin >= 0 and math.isfinite(rule.margin)):
        raise DinokitError(f"--margin must be a number of COCO points >= 0, got {rule.margin}")
    if rule.kind not in KINDS:
        raise DinokitError(f"the rule must be one of {', '.join(KINDS)}, got '{rule.kind}'")
    if not cap:
        return
    if not 2 <= rule.max_seeds <= SEED_SPACE:
        raise DinokitError(f"--max-seeds must be between 2 and {SEED_SPACE}, got {rule.max_seeds}")
    if rule.comparisons and rule.max_seeds < rule.first_look:
        # the smallest cap that can decide (a cap-calibrated rule's first look depends on its cap)
        useful = next(c for c in range(2, SEED_SPACE + 1) if replace(rule, max_seeds=c).first_look <= c)
        raise DinokitError(f"--max-seeds {rule.max_seeds} can decide nothing: with {len(rule.comparisons)} "
                           f"comparison(s) the rule's first possible verdict comes at {useful} seeds; use "
                           f"--max-seeds {useful} or more")


def check_hours(max_hours: float | None) -> None:
    if max_hours is not None and not max_hours > 0:
        raise DinokitError(f"--max-hours must be positive, got {max_hours}")


def rule_of(attrs: dict[str, Any], arm_set: Any, max_seeds: int = 20) -> Rule | None:
    """The rule stored in a study's user attributes (None for a fixed-seed study); `arm_set`
    (ablate.arms.ArmSet) gives the comparisons of a rule stored before they were."""
    raw = attrs.get(RULE_ATTR)
    return Rule.from_dict(raw, comparisons(arm_set), max_seeds) if isinstance(raw, dict) else None


def stored_rule(storage_url: str, name: str, arm_set: Any) -> Rule | None:
    """The rule of the study `name` in `storage_url` (None: a fixed-seed study)."""
    from dinokit.studies.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=open_storage(storage_url))
    return rule_of(study.user_attrs, arm_set)


def keep_rule(study: optuna.Study, rule: Rule, legacy: list[Comparison] | None = None,
              kind_given: bool = False) -> Rule:
    """Store `rule` in a new study, or return the one the study started with: its margin and
    measure must match; its kind, alpha, rho and comparisons win (`legacy`: the comparisons of a
    study whose stored rule predates them; default the rule's). A larger seed cap continues an
    anytime-valid rule (the stored cap is raised) and is refused for a rule set for its cap; a
    smaller one stops this command sooner. `kind_given`: the kind was asked for (--rule), so a
    stored study under another kind is refused rather than silently kept."""
    raw = study.user_attrs.get(RULE_ATTR)
    if not isinstance(raw, dict):
        study.set_user_attr(RULE_ATTR, rule.to_dict())
        return rule
    stored = Rule.from_dict(raw, list(rule.comparisons) if legacy is None else legacy, rule.max_seeds)
    for key, flag in (("margin", "--margin"), ("measure", "--decide-on")):
        if getattr(stored, key) != getattr(rule, key):
            raise DinokitError(f"ablation '{study.study_name}' decides with {flag} {getattr(stored, key)}, not "
                               f"{getattr(rule, key)}: keep it, or use another --name")
    if kind_given and stored.kind != rule.kind:
        raise DinokitError(f"ablation '{study.study_name}' decides with --rule {stored.kind}, not {rule.kind}: "
                           "a study keeps the rule it started with; use another --name")
    if rule.max_seeds > stored.max_seeds and not KINDS[stored.kind].anytime:
        raise DinokitError(f"ablation '{study.study_name}' has a {stored.kind} rule set for --max-seeds "
                           f"{stored.max_seeds}; a larger cap would void it: use another --name")
    if rule.max_seeds > stored.max_seeds or "first_look" not in raw:  # an anytime rule extends (and old ones fill in)
        stored = replace(stored, max_seeds=max(rule.max_seeds, stored.max_seeds))
        study.set_user_attr(RULE_ATTR, stored.to_dict())
    return stored


def next_round(decisions: list[Decision], done: set[tuple[str, int]], seeds: list[int], opened: int, rule: Rule,
               cap: int, jobs: int) -> tuple[list[tuple[str, int]], int]:
    """The pairs of the next round and the number of seeds opened after it: every needed arm at
    every opened seed it lacks, plus one new seed (more when `jobs` exceeds the needed arms);
    the first round opens as many seeds as the rule needs for its first possible verdict. A
    round that an interrupt left unfinished is completed first, and the rule looks at it, before
    a new seed opens (the look it would otherwise skip may decide)."""
    arms = needed_arms(decisions)
    first = rule.first_look
    lacking = [(a, seeds[i]) for i in range(min(opened, cap)) for a in arms if (a, seeds[i]) not in done]
    if opened >= first and lacking:
        return lacking, min(cap, opened)
    step = first - opened if opened < first else max(1, math.ceil(jobs / max(1, len(arms))))
    target = min(cap, opened + step)
    return [(a, seeds[i]) for i in range(target) for a in arms if (a, seeds[i]) not in done], target


def used_seconds(records: list[dict[str, Any]]) -> float:
    """The study's trial-seconds so far (`studies.trials.trial_seconds` of every trial)."""
    return sum(trial_seconds(r["attrs"], r["trial"]) for r in records)


def run_until_decided(spec: Any, rule: Rule, jobs: int = 1, say: Say = print, launch: Any = None,
                      max_hours: float | None = None, kind_given: bool = False) -> tuple[list[Decision], str]:
    """Rounds until every comparison has its verdict or a cap is hit; returns the last decisions
    (under the study's stored rule) and why the study stopped. `spec`: an AblationSpec whose seeds
    are the SEED_SPACE choices; `launch`: where each round's workers run (a `studies.launch.Launch`
    that waits, or local)."""
    from dinokit.ablate import study as study_mod

    if not rule.comparisons:  # the questions of the study's arm set
        rule = replace(rule, comparisons=tuple(comparisons(spec.arm_set)))
    check_rule(rule)
    check_hours(max_hours)
    study = study_mod.prepare(spec)
    cap = rule.max_seeds
    stored_arms = study_mod.AblationSpec.from_identity(spec.name, study.user_attrs["dinokit"], spec.storage,
                                                       spec.out_dir).arm_set  # the question it was stored with
    rule = keep_rule(study, rule, comparisons(stored_arms), kind_given)
    cap = min(cap, rule.max_seeds)
    budget = None if max_hours is None else 3600.0 * max_hours
    while True:
        _, records = study_mod.read_trials(spec.storage, spec.name)
        data = report_data(spec.name, spec.arm_set, spec.base, spec.seeds, records, {})
        decisions = decisions_for(data, rule)
        if all(d.final for d in decisions):
            return decisions, stop_reason(decisions, rule)
        done_rows = completed(data.trials)
        done = set(zip(done_rows["arm"], done_rows["seed"])) if len(done_rows) else set()
        tried = {r["seed"] for r in records}
        opened = max((spec.seeds.index(s) + 1 for s in tried if s in spec.seeds), default=0)
        wanted, target = next_round(decisions, done, spec.seeds, opened, rule, cap, jobs)
        broken = deterministic_failures(data.trials) if not spec.retry_failed else data.trials.iloc[0:0]
        stuck = [r for r in broken.itertuples() if (r.arm, r.seed) in set(wanted)]
        if stuck:
            r = stuck[0]
            return decisions, stop_reason(decisions, rule, f"trial {r.trial} ({r.arm} seed {r.seed}) failed "
                                          f"deterministically ({r.error}); fix its cause and rerun with --retry-failed")
        if not wanted:
            return decisions, stop_reason(decisions, rule, f"the seed cap (--max-seeds {cap}) is reached")
        used = used_seconds(records)
        if budget is not None and used >= budget:
            return decisions, stop_reason(decisions, rule, f"the time cap (--max-hours {max_hours:g}) is reached "
                                          f"({used / 3600:.2f} h of trials)")
        open_ = sum(not d.final for d in decisions)
        say(f"round: {open_} undecided comparison(s); training {len(wanted)} trial(s), seeds up to {target}")
        spec.wanted, spec.max_seconds = wanted, budget
        try:
            study_mod.run(spec, jobs=jobs, say=say, launch=launch)
        finally:
            spec.wanted, spec.max_seconds = None, None
        _, after = study_mod.read_trials(spec.storage, spec.name)
        if budget is not None and used_seconds(after) >= budget:
            continue  # the loop's top reports the time cap with the verdicts of what finished
        if sum(r["state"] == "COMPLETE" for r in after) == sum(r["state"] == "COMPLETE" for r in records):
            return decisions, stop_reason(decisions, rule, "a round finished no trial (see the failed trials); "
                                          "rerun to retry")
