"""A study's stored trials as plain tables: one row per trial, one row per evaluation.

Everything a report, a verdict or a round reads starts here, so the tables can be rebuilt from
storage at any time and tested on hand-made ones. AP-type numbers are fractions in [0, 1].

A diverged trial (`diverged at step S`, recorded by ablate/study.py) is an outcome, not a missing
pair: it is COMPLETE and scores 0 on every measure (final AP/AP50/..., the curve's AUC and tails),
because the measure is the model at the end of the budget and a run that diverged has none; its
evaluations before the divergence stay in the history (the convergence curves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from dinokit.ablate.arms import ArmSet, arm_config, setting
from dinokit.ablate.decide import Rule
from dinokit.ablate.stats import THRESHOLDS, TAILS, curve_stats, threshold_column
from dinokit.config import Config

ALL_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
SCORED = (*ALL_METRICS, "auc", *TAILS)  # what a diverged trial scores 0 on
SWITCHES = ("queries", "denoising", "neg_target", "lft", "dn_draws", "attention")


@dataclass
class ReportData:
    """Everything a report shows. `trials`: one row per trial (columns: trial, state, arm, seed,
    metrics, train_time, params, error, diverged, switches); `history`: one row per evaluation
    (trial, arm, seed, step, metrics)."""

    name: str
    arms: list[str]
    baseline: str
    trials: pd.DataFrame
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    seeds: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # shown as-is: preset, data, budget, ...
    arm_settings: dict[str, str] = field(default_factory=dict)  # arm -> "field=value, ..."
    arm_set: ArmSet | None = None  # a `steps` one also gets the step table
    analyses: dict[int, dict[str, Any]] = field(default_factory=dict)  # trial -> per-class/size/errors
    rule: Rule | None = None  # the study's stored rule (or one given on `ablate report` of a fixed study)
    explore: Rule | None = None  # `ablate report --margin/--decide-on` of a sequential study: shown beside
    reason: str = ""  # why a sequential study stopped
    rule_note: str = ""  # where a rule not stored by the study came from
    sequential: bool = False  # seeds run in rounds: arms not needed are not "missing"
    sections: list[Any] = field(default_factory=list)  # findings.Section, filled by write_report
    decisions: list[Any] = field(default_factory=list)  # decide.Decision under `rule`, filled by write_report


def report_data(name: str, arm_set: ArmSet, base: Config, seeds: list[int], records: list[dict[str, Any]],
                meta: dict[str, Any]) -> ReportData:
    """Tables from stored trial records ({trial, state, arm, seed, attrs, started, finished}).

    Metrics are the trial's final evaluation (the last step mark); each row also carries its
    curve's AUC and steps-to-threshold, and the arm's resolved switches (and any other field an
    arm overrides), so trials.csv alone says what was trained and how it converged.
    """
    configs = {a.name: arm_config(base, a) for a in arm_set.arms}
    extra = dict.fromkeys(k for a in arm_set.arms for k in a.overrides if k not in SWITCHES)
    rows, hist, analyses = [], [], {}
    for rec in records:
        if rec["arm"] not in configs:
            continue
        ua, cfg = rec["attrs"], configs[rec["arm"]]
        history = ua.get("history") or []
        last = history[-1] if history else {}
        metrics = {**(ua.get("metrics") or {}), **{m: last[m] for m in ALL_METRICS if isinstance(last.get(m), float)}}
        diverged = ua.get("diverged")
        row: dict[str, Any] = {k: rec[k] for k in ("trial", "state", "arm", "seed")}
        row.update({m: 0.0 if diverged is not None else metrics.get(m, math.nan) for m in ALL_METRICS})
        complete = rec["state"] == "COMPLETE"
        row.update(train_time=_number(ua.get("train_time")), params=_number(ua.get("params")),
                   steps=last.get("step"), error="" if complete else str(ua.get("error") or ""),
                   diverged=math.nan if diverged is None else int(diverged),
                   deterministic=bool(ua.get("deterministic")) and not complete,
                   run_dir=ua.get("run_dir") or "", host=ua.get("host", ""), slurm_job=ua.get("slurm_job", ""),
                   started=_iso(rec.get("started")), finished=_iso(rec.get("finished")))
        row.update({k: setting(cfg, k) for k in (*SWITCHES, *extra)})
        rows.append(row)
        if complete and diverged is None and isinstance(ua.get("analysis"), dict):
            analyses[int(rec["trial"])] = ua["analysis"]
        if complete:
            hist += [{"trial": rec["trial"], "arm": rec["arm"], "seed": rec["seed"], **h} for h in history]
    trials, history = pd.DataFrame(rows), pd.DataFrame(hist)
    if not history.empty:  # only the curves of the trials the table uses
        history = history[history["trial"].isin(completed(trials)["trial"])]
    if not trials.empty:
        trials = trials.merge(curve_stats(history), on="trial", how="left")
        gone = trials["diverged"].notna()
        trials.loc[gone, ["auc", *TAILS]] = 0.0
        trials.loc[gone, [threshold_column(t) for t in THRESHOLDS]] = math.nan
    settings = {a.name: (", ".join(f"{k}={_show(v)}" for k, v in a.overrides.items()) or "base config")
                + (f" — {a.description}" if a.description else "") for a in arm_set.arms}
    meta = {**({"description": arm_set.description} if arm_set.description else {}), **meta,
            "baseline": arm_set.baseline}
    return ReportData(name, arm_set.names, arm_set.baseline, trials, history, list(seeds), meta, settings, arm_set,
                      analyses)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def _iso(when: Any) -> str:
    return when.isoformat(timespec="seconds") if isinstance(when, datetime) else ""


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished trials (diverged ones included), one per (arm, seed) (the latest if storage ever
    holds two)."""
    if trials.empty or "state" not in trials:
        return trials.iloc[0:0]
    done = trials[trials["state"] == "COMPLETE"]
    return done.sort_values("trial").drop_duplicates(["arm", "seed"], keep="last")


def deterministic_failures(trials: pd.DataFrame) -> pd.DataFrame:
    """Pairs whose latest attempt failed deterministically (a DinokitError such as bad data) and
    that never finished: retrying them without a fix would fail again (`--retry-failed`)."""
    if trials.empty or "deterministic" not in trials:
        return trials.iloc[0:0]
    done = set(zip(*[completed(trials)[c] for c in ("arm", "seed")]))
    failed = trials[trials["state"] == "FAIL"].sort_values("trial").drop_duplicates(["arm", "seed"], keep="last")
    keep = [bool(r.deterministic) and (r.arm, r.seed) not in done for r in failed.itertuples()]
    return failed[keep]
