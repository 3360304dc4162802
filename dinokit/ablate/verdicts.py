"""From a study's trials to the verdicts of its stored rule, and how every view shows them.

`decisions_for(data, rule)` is the only path from trials to verdicts (the rounds, the stop line,
the terminal, report.md/html and the captions all call it with the study's stored rule), through
the one `decide.decide`. It adds what the trials say beyond the paired numbers:

- divergence: a diverged trial scores 0 (ablate/records.py) and each arm's divergence rate is
  shown with its exact (Clopper-Pearson) 95% interval;
- learning: an arm learned at this budget when its mean AP50 at the last evaluation is at least
  `FLOOR_AP50` and above its mean at the first evaluation. A comparison neither of whose arms
  learned gets no verdict ("the arms did not learn at this budget"): "no effect" between two
  models that detect nothing is true of the numbers and answers nothing. A comparison where one
  arm learned and the other did not keeps its verdict (that is an effect).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from scipy import stats

from dinokit.ablate.decide import (
    EQUIVALENT, HELPS, HURTS, KINDS, NOT_LEARNED, POINTS, UNDECIDED, Decision, Rule, decide, seeds_to_decide,
)
from dinokit.ablate.format import signed
from dinokit.ablate.records import ReportData, completed
from dinokit.ablate.stats import seeds_needed

FLOOR_AP50 = 0.05  # 5 COCO points of AP50: below it at the last evaluation, an arm has not learned
NOT_LEARNED_TEXT = "no verdict: the arms did not learn at this budget"


def measure_values(done: pd.DataFrame, column: str) -> pd.DataFrame:
    """Completed trials (arm, seed, column) as a seed x arm table."""
    if done.empty or column not in done:
        return pd.DataFrame()
    return done.pivot_table(index="seed", columns="arm", values=column, aggfunc="last")


def diverged_table(done: pd.DataFrame) -> pd.DataFrame | None:
    """Completed trials as a seed x arm table of "diverged" (None when no trial diverged)."""
    if done.empty or "diverged" not in done or not done["diverged"].notna().any():
        return None
    flags = done.assign(gone=done["diverged"].notna().astype(float))
    return flags.pivot_table(index="seed", columns="arm", values="gone", aggfunc="last") > 0


def learning(data: ReportData) -> tuple[dict[str, bool], str]:
    """Which arms learned at this budget (see the module's note), and for arms that did not, an
    estimate of the budget they would need from their AP50 curves ("" when every arm learned)."""
    done = completed(data.trials)
    if done.empty or "AP50" not in done or done["AP50"].isna().all():
        return {}, ""
    last = done.groupby("arm")["AP50"].mean()
    first = _first_marks(data.history)
    learned = {a: bool(v >= FLOOR_AP50 and (a not in first or v > first[a][1])) for a, v in last.items()}
    if all(learned.values()):
        return learned, ""
    return learned, _budget_estimate(data.history, data.trials)


def _first_marks(history: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """arm -> (step, mean AP50) of its first evaluation, where an arm was evaluated twice or more."""
    if history.empty or "AP50" not in history or "step" not in history:
        return {}
    out = {}
    for arm, h in history.dropna(subset=["AP50"]).groupby("arm"):
        curve = h.groupby("step")["AP50"].mean().sort_index()
        if len(curve) >= 2:
            out[str(arm)] = (float(curve.index[0]), float(curve.iloc[0]))
    return out


def _budget_estimate(history: pd.DataFrame, trials: pd.DataFrame) -> str:
    """The steps at which the best arm's mean AP50 curve, extended as a straight line through its
    first and last evaluation, would reach the floor (a rough estimate: early curves often bend
    upwards later, and later ones flatten)."""
    if history.empty or "AP50" not in history:
        return ""
    best: tuple[float, float, float, float] | None = None
    for _, h in history.dropna(subset=["AP50"]).groupby("arm"):
        curve = h.groupby("step")["AP50"].mean().sort_index()
        if len(curve) < 2:
            continue
        x0, x1, y0, y1 = float(curve.index[0]), float(curve.index[-1]), float(curve.iloc[0]), float(curve.iloc[-1])
        if best is None or y1 > best[3]:
            best = (x0, x1, y0, y1)
    if best is None:
        return ""
    x0, x1, y0, y1 = best
    if y1 <= y0:
        return f"the AP50 curves did not rise in {x1:.0f} steps: give the trials a larger budget"
    steps = x1 + (FLOOR_AP50 - y1) * (x1 - x0) / (y1 - y0)
    return (f"at the rate of the best arm's AP50 curve, AP50 {POINTS * FLOOR_AP50:g} needs about "
            f"{_round(max(steps, x1))} steps (a straight line through its evaluations; this budget: {x1:.0f})")


def _round(steps: float) -> str:
    digits = max(0, int(math.log10(max(steps, 1.0))) - 1)
    return f"{round(steps, -digits):.0f}"


def decisions_for(data: ReportData, rule: Rule) -> list[Decision]:
    """The verdicts of a report's data under `rule` (the study's stored one)."""
    done = completed(data.trials)
    learned, _ = learning(data)
    return decide(measure_values(done, rule.column), rule, diverged_table(done), learned or None)


# --------------------------------------------------------------------------- how the verdicts read


def verdict_label(d: Decision, rule: Rule) -> str:
    """The words of a verdict, the same in the stop line, the terminal, the report and captions."""
    label = {HELPS: "helps", HURTS: "hurts", EQUIVALENT: f"no effect beyond ±{rule.margin:g}",
             UNDECIDED: "undecided", NOT_LEARNED: NOT_LEARNED_TEXT}[d.verdict]
    margin = rule.margin / POINTS
    if d.verdict in (HELPS, HURTS) and -margin < d.low and d.high < margin:
        label += f" (by less than {rule.margin:g})"
    if d.flags and d.decided:
        label += f" [rests on its assumption: {'; '.join(d.flags)}"
        if d.free is not None:
            low, high = d.free
            free = "unbounded" if math.isinf(low) else f"[{signed(low, POINTS)}, {signed(high, POINTS)}]"
            label += f"; distribution-free interval {free}"
        label += "]"
    return label


def verdict_line(decisions: list[Decision], rule: Rule) -> str:
    """Every comparison's verdict in one line: 'name: verdict (n seeds); ...'."""
    return "; ".join(f"{d.name}: {verdict_label(d, rule)} ({d.decided_at if d.decided else d.n} seeds)"
                     for d in decisions)


def stop_reason(decisions: list[Decision], rule: Rule, why: str = "") -> str:
    """Why the rounds stop (`why`; by default: no comparison needs more seeds), with each verdict."""
    if why:
        head = why
    elif all(d.verdict == NOT_LEARNED for d in decisions):
        head = "no comparison can be decided: the arms did not learn at this budget"
    else:
        head = "every comparison has its verdict"
    return f"{head}. Verdicts: {verdict_line(decisions, rule)}"


def decisions_table(decisions: list[Decision], rule: Rule) -> pd.DataFrame:
    """The verdict table: one row per comparison (COCO points of the rule's measure)."""
    unit = rule.measure
    rows: list[dict[str, Any]] = []
    for d in decisions:
        interval = "—" if math.isinf(d.low) or math.isnan(d.low) else \
            f"[{signed(d.low, POINTS)}, {signed(d.high, POINTS)}]"
        fixed = seeds_needed(d.mean, d.sd)
        needs = seeds_to_decide(d.mean, d.sd, rule.margin / POINTS, rule.each, rule=rule)
        rows.append({"comparison": d.name, "verdict": verdict_label(d, rule),
                     "seeds": str(d.decided_at) if d.decided else f"{d.n} (not enough)" if not d.final else str(d.n),
                     f"mean Δ{unit}": "—" if math.isnan(d.mean) else signed(d.mean, POINTS),
                     "interval (the rule's)": interval,
                     f"sd of Δ{unit}": "—" if math.isnan(d.sd) else f"{POINTS * d.sd:.2f}",
                     "diverged [95% CI]": f"{d.arm} {divergence_cell(*d.arm_diverged)}; "
                                          f"{d.reference} {divergence_cell(*d.reference_diverged)}",
                     "this rule would need": _seeds(needs, d.final, rule),
                     "fixed design would need": _seeds(fixed, d.final)})
    return pd.DataFrame(rows)


def divergence_cell(k: int, n: int) -> str:
    """'k/n [low–high%]': the share of diverged trials with its exact 95% interval."""
    if n == 0:
        return "0/0"
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{k}/{n} [{100 * ci.low:.0f}–{100 * ci.high:.0f}%]"


def _seeds(n: float, final: bool, rule: Rule | None = None) -> str:
    capped = rule is not None and not KINDS[rule.kind].anytime
    beyond = f"> {rule.max_seeds} (the cap)" if capped and rule is not None else "> 1000"
    return "—" if final or math.isnan(n) else (beyond if math.isinf(n) else f"{int(n)} seeds")


def rule_text(rule: Rule, k: int | None = None) -> str:
    """One paragraph for the report: what the verdicts mean and what they rest on."""
    kind = KINDS[rule.kind]
    k = len(rule.comparisons) if k is None else k
    return (f"Verdicts on {rule.measure} (COCO points), margin ±{rule.margin:g}, under the study's stored rule: "
            f"each interval is {kind.describe(rule)} at {100 * rule.alpha:g}% / {k} comparison(s) (Bonferroni), "
            f"seed cap {rule.max_seeds}, so looking after every seed does not inflate the error rates. It assumes "
            f"{kind.assumption}; a verdict whose data may not fit says so. helps: the interval lies above 0; hurts: "
            f"below 0; no effect: inside ±{rule.margin:g}; no verdict: neither arm reached AP50 "
            f"{POINTS * FLOOR_AP50:g} or rose above its first evaluation at this budget. A diverged trial scores 0 "
            "(it is an outcome of the arm, not a missing seed); 'diverged' gives each arm's share with its exact 95% "
            "interval. 'seeds' is the number of paired seeds at the first decisive look. 'sd of Δ' is the seeds' "
            "spread of the paired difference: it sets the cost of a verdict. For an undecided comparison, 'this "
            "rule would need' is the seeds at which this rule would give a verdict if the mean and the spread seen "
            "so far hold; 'fixed design would need' is the paired t test's estimate (80% power, 5% two-sided).")

