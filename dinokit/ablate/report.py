"""The ablation report: per-arm statistics over seeds, paired differences, tables and files.

Input is plain pandas (ablate/records.py: one row per trial, one row per evaluation), so the
report can be rebuilt from storage at any time and tested on hand-made tables. AP-type numbers are
fractions in [0, 1] in the CSV and COCO points (x100) in the tables, as in papers. Every file is
written to a temporary name and moved into place, so a crash never leaves a half-written report.

A study with a rule shows one verdict per comparison, the rule's (Verdicts); every other
interval here (the per-arm and step tables' paired-t intervals, forest.png) is fixed-design and
labelled descriptive: on seeds a sequential study chose to stop at, it is not a test.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dinokit.ablate import findings
from dinokit.ablate.arms import STEPS
from dinokit.ablate.decide import Rule
from dinokit.ablate.format import MIN_SEEDS_FOR_CI, delta_cell, mean_std, params_cell, reached_cell, seeds_cell
from dinokit.ablate.plots import plot_ap, plot_convergence, plot_forest, plot_heatmap
from dinokit.ablate.records import ReportData, completed, report_data  # noqa: F401 (report_data: re-exported)
from dinokit.ablate.steps import comparisons, step_differences
from dinokit.ablate.stats import THRESHOLDS, PairedDiff, paired_difference, seeds_needed, threshold_column
from dinokit.ablate.verdicts import decisions_for, verdict_label
from dinokit.files import write_text, write_with

METRICS = ("AP", "AP50", "AP75", "APs")
CURVE = ("auc", *(threshold_column(t) for t in THRESHOLDS))  # per-trial convergence numbers
COMPARED = (*METRICS, *CURVE)  # each gets a paired difference vs the baseline and a power estimate


def summarize(trials: pd.DataFrame, arms: list[str], baseline: str) -> pd.DataFrame:
    """One row per arm: n, mean/std of each metric, curve number and train time; for each of
    COMPARED the paired difference vs the baseline (d<col>, d<col>_low, d<col>_high, d<col>_n)
    and the seeds a paired t test needs to resolve it (d<col>_seeds). dAP's pair count is `pairs`."""
    done = completed(trials)
    base = done[done["arm"] == baseline].set_index("seed") if not done.empty else None
    rows = []
    for arm in arms:
        g = done[done["arm"] == arm] if not done.empty else done
        row: dict[str, Any] = {"arm": arm, "n": len(g)}
        for col in (*METRICS, *CURVE, "train_time"):
            values = g[col].astype(float).dropna() if col in g else pd.Series(dtype=float)
            row[f"{col}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            if col in CURVE[1:]:
                row[f"{col}_reached"] = len(values)
        row["params"] = float(g["params"].max()) if "params" in g and len(g) else math.nan
        for col in COMPARED:
            if base is not None and len(g) and col in g:
                diff = paired_difference(g.set_index("seed")[col], base[col])
            else:
                diff = PairedDiff(math.nan, math.nan, math.nan, 0)
            row.update({f"d{col}": diff.mean, f"d{col}_low": diff.low, f"d{col}_high": diff.high,
                        f"d{col}_n": diff.n, f"d{col}_seeds": math.nan if arm == baseline else
                        seeds_needed(diff.mean, diff.sd)})
        row["pairs"] = row["dAP_n"]
        failed = trials[(trials["arm"] == arm) & (trials["state"] == "FAIL")] if not trials.empty else trials
        finished = set(g["seed"]) if len(g) else set()
        open_ = failed[~failed["seed"].isin(finished)].sort_values("trial").drop_duplicates("seed", keep="last") \
            if len(failed) else failed  # seeds still without a result: the latest attempt says why
        stopped = open_["error"].fillna("").astype(str).str.startswith("interrupted") \
            if len(open_) and "error" in open_ else []
        row["interrupted"] = int(sum(stopped))
        row["failed"] = len(open_) - row["interrupted"]
        row["rerun"] = int(failed["seed"].isin(finished).sum()) if len(failed) else 0  # attempts a retry replaced
        row["diverged"] = int(g["diverged"].notna().sum()) if "diverged" in g else 0
        rows.append(row)
    return pd.DataFrame(rows)


def display_table(summary: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The human table: strings, one row per arm (shared by markdown, HTML and the terminal)."""
    rows = []
    for _, r in summary.iterrows():
        notes = [f"{int(r[k])} {k}" for k in ("diverged", "failed", "interrupted") if r.get(k, 0)]
        notes += [f"{int(r['rerun'])} rerun"] if r.get("rerun", 0) else []
        rows.append({
            "arm": r["arm"],
            "seeds": str(int(r["n"])) + (f" ({', '.join(notes)})" if notes else ""),
            **{m: mean_std(r[f"{m}_mean"], r[f"{m}_std"]) for m in METRICS},
            f"ΔAP vs {baseline} [95% CI]": delta_cell(r, baseline),
            "seeds for ΔAP": seeds_cell(r, baseline),
            "train time (s)": mean_std(r["train_time_mean"], r["train_time_std"], scale=1.0),
            "params": params_cell(r["params"]),
        })
    return pd.DataFrame(rows)


def convergence_table(summary: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """AP50 area under the curve and steps to AP50 thresholds, with paired differences."""
    rows = []
    for _, r in summary.iterrows():
        row = {"arm": r["arm"], "AP50 AUC": mean_std(r["auc_mean"], r["auc_std"]),
               "ΔAUC [95% CI]": delta_cell(r, baseline, "auc"), "seeds for ΔAUC": seeds_cell(r, baseline, "auc")}
        for level, col in zip(THRESHOLDS, CURVE[1:]):
            row[f"steps to AP50 {level:g}"] = reached_cell(r, col)
            row[f"Δsteps {level:g} [95% CI]"] = delta_cell(r, baseline, col, scale=1.0, digits=0)
        for m in METRICS[1:]:
            row[f"Δ{m} [95% CI]"] = delta_cell(r, baseline, m)
        rows.append(row)
    return pd.DataFrame(rows)


def steps_table(data: ReportData) -> pd.DataFrame | None:
    """For a `kind: steps` study: what each step adds, paired by seed; None for any other study.
    With a rule, the step's one verdict is the rule's (the same as in Verdicts); without one,
    which descriptive intervals exclude 0."""
    if data.arm_set is None or data.arm_set.kind != STEPS:
        return None
    verdicts = {(d.arm, d.reference): verdict_label(d, data.rule) for d in data.decisions} if data.rule else {}
    rows = []
    for _, r in step_differences(completed(data.trials), data.arm_set).iterrows():
        above = r["step"].split(" → ")[0]
        row = {"step": r["step"], "change": r["change"], "pairs": int(r["dAP50_n"]),
               **{f"Δ{label} [95% CI, descriptive]": delta_cell(r, "", col) for col, label in
                  (("AP", "AP"), ("AP50", "AP50"), ("auc", "AP50 AUC"))}}
        if data.rule is not None:
            row["verdict (the rule's)"] = verdicts.get((r["arm"], above), "—")
        else:
            row["CI excludes 0 (descriptive)"] = ", ".join(
                label for col, label in (("AP", "AP"), ("AP50", "AP50"), ("auc", "AUC"))
                if r[f"d{col}_resolved"] and r[f"d{col}_n"] >= MIN_SEEDS_FOR_CI) or "no"
        rows.append({**row, "seeds for ΔAP50": seeds_cell(r, "", "AP50"), "seeds for ΔAUC": seeds_cell(r, "", "auc")})
    return pd.DataFrame(rows)


STEPS_NOTE = (
    "Each row is one step of a `kind: steps` study: the arm against the arm above it, paired by "
    "seed (the same descriptive 95% paired-t interval and seed estimate as above). With a rule, "
    "'verdict' is the step's one verdict, the same as in Verdicts; the intervals beside it assume "
    "seeds fixed in advance, which a sequential study's are not, so they describe and do not decide. "
    "Without a rule, 'CI excludes 0' names the measures whose interval excludes 0, from 3 pairs or more."
)


def _md_table(df: pd.DataFrame, left: tuple[str, ...] = ("arm", "settings", "error")) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |"]
    lines.append("|" + "|".join("---" if c in left else "---:" for c in df.columns) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def failures(trials: pd.DataFrame) -> pd.DataFrame:
    """Failed or interrupted trials with their error, newest last (shown, never hidden)."""
    if trials.empty:
        return pd.DataFrame(columns=["trial", "arm", "seed", "error"])
    bad = trials[trials["state"] == "FAIL"].sort_values("trial")
    errors = bad["error"] if "error" in bad else pd.Series("", index=bad.index)
    errors = errors.fillna("").astype(str).replace("", "interrupted (worker stopped without reporting)")
    if "deterministic" in bad:
        errors = errors.where(~bad["deterministic"].fillna(False).astype(bool),
                              errors + " (deterministic: not retried; fix it, then --retry-failed)")
    return pd.DataFrame({"trial": bad["trial"], "arm": bad["arm"], "seed": bad["seed"], "error": errors})


def missing_pairs(data: ReportData) -> list[str]:
    """(arm, seed) pairs without a finished trial, e.g. while a study is still running."""
    done = completed(data.trials)
    if data.sequential:  # rounds train only the arms an undecided comparison needs
        return []
    have = set(zip(done["arm"], done["seed"])) if not done.empty else set()
    return [f"{a}/s{s}" for a in data.arms for s in data.seeds if (a, s) not in have]


NOTE = (
    "AP metrics are COCO points (x100) at the final step mark: mean ± sample standard deviation "
    "over seeds; a diverged trial counts with AP 0 (its arm's 'seeds' says how many diverged). "
    "ΔAP is the mean over seeds of (arm − baseline) AP, each arm paired with the baseline run of "
    "the same seed; the interval is the 95% paired-t confidence interval (n − 1 degrees of freedom), "
    "descriptive: it assumes the seeds were fixed in advance and one comparison, so where the report "
    "has Verdicts, they are the answer and this interval is not. † marks intervals from fewer than 3 "
    "pairs (1 degree of freedom: very wide, barely informative). 'seeds for Δ' is how many paired "
    "seeds a paired t test (two-sided, 5% significance) needs to resolve the observed difference with "
    "80% power, if the differences keep their observed spread."
)
CURVE_NOTE = (
    "Every trial is evaluated at the same step marks. AP50 AUC is the area under the AP50-vs-step "
    "curve over the marks divided by their step span (the curve's mean height, COCO points). Steps "
    "to AP50 t is the first mark whose AP50 reaches t; Δsteps pairs only seeds where both arms "
    "reached it (negative: the arm gets there sooner)."
)


def render_markdown(data: ReportData, summary: pd.DataFrame) -> str:
    done = len(completed(data.trials))
    total = len(data.arms) * len(data.seeds)
    out = [f"# Ablation: {data.name}", ""]
    if data.meta.get("description"):
        out += [str(data.meta["description"]), ""]
    for key, value in {**data.meta, "trials finished": f"{done} / {total}"}.items():
        if key != "description":
            out.append(f"- **{key}**: {value}")
    out.append("")
    for sec in _top(data, True):
        out += _md_section(sec)
    out += ["## Results", "", _md_table(display_table(summary, data.baseline)), "", NOTE, ""]
    steps = steps_table(data)
    if steps is not None:
        out += ["## Steps", "", _md_table(steps, ("step", "change")), "", STEPS_NOTE, ""]
    out += ["## Convergence", "", _md_table(convergence_table(summary, data.baseline)), "", CURVE_NOTE, ""]
    out += ["![AP50 against step](convergence.png)", "", "![paired differences](forest.png)", "",
            "![AP per arm](ap.png)", ""]
    for sec in _top(data, False):
        out += _md_section(sec)
    if data.arm_settings:
        settings = pd.DataFrame({"arm": list(data.arm_settings), "settings": list(data.arm_settings.values())})
        out += ["## Arms", "", _md_table(settings), ""]
    fails = failures(data.trials)
    if len(fails):
        out += ["## Failed trials", "", _md_table(fails), ""]
    missing = missing_pairs(data)
    if missing:
        out += ["## Not finished", "", ", ".join(missing), ""]
    return "\n".join(out)


def _top(data: ReportData, top: bool) -> list[Any]:
    """The sections above the per-arm table (the verdicts), or the others."""
    return [sec for sec in data.sections if sec.top == top]


def _md_section(sec: Any) -> list[str]:
    out = [f"## {sec.title}", ""]
    if sec.table is not None and len(sec.table):
        out += [_md_table(sec.table, sec.left), ""]
    if sec.note:
        out += [sec.note, ""]
    return out + [f"![{alt}]({name})\n" for name, alt in sec.images]


def _html_section(sec: Any, table: Any) -> list[str]:
    esc = html.escape
    out = [f"<h2>{esc(sec.title)}</h2>"]
    if sec.table is not None and len(sec.table):
        out.append(table(sec.table))
    if sec.note:
        out.append(f"<p>{esc(sec.note)}</p>")
    return out + [f"<p><img class='wide' src='{esc(name)}' alt='{esc(alt)}'></p>" for name, alt in sec.images]


def render_html(data: ReportData, summary: pd.DataFrame) -> str:
    def table(df: pd.DataFrame) -> str:
        return df.to_html(index=False, escape=True, border=0, classes="t", na_rep="—")

    esc = html.escape
    done = len(completed(data.trials))
    meta = {**data.meta, "trials finished": f"{done} / {len(data.arms) * len(data.seeds)}"}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Ablation {esc(data.name)}</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:80em}table.t{border-collapse:collapse}",
        ".t td,.t th{padding:.3em .7em;border-bottom:1px solid #ccc;text-align:right}",
        ".t td:first-child,.t th:first-child{text-align:left}img{max-width:48%}img.wide{max-width:100%}",
        "</style></head><body>",
        f"<h1>Ablation: {esc(data.name)}</h1><ul>",
        *(f"<li><b>{esc(str(k))}</b>: {esc(str(v))}</li>" for k, v in meta.items()),
        "</ul>", *(x for sec in _top(data, True) for x in _html_section(sec, table)),
        "<h2>Results</h2>", table(display_table(summary, data.baseline)),
        f"<p>{esc(NOTE)}</p>",
        *([] if (steps := steps_table(data)) is None else ["<h2>Steps</h2>", table(steps), f"<p>{esc(STEPS_NOTE)}</p>"]),
        "<h2>Convergence</h2>", table(convergence_table(summary, data.baseline)),
        f"<p>{esc(CURVE_NOTE)}</p>",
        "<p><img src='convergence.png' alt='AP50 against step'> <img src='forest.png' alt='paired differences'>"
        " <img src='ap.png' alt='AP per arm'></p>",
        *(x for sec in _top(data, False) for x in _html_section(sec, table)),
    ]
    if data.arm_settings:
        parts += ["<h2>Arms</h2>", table(pd.DataFrame({"arm": list(data.arm_settings),
                                                       "settings": list(data.arm_settings.values())}))]
    fails = failures(data.trials)
    if len(fails):
        parts += ["<h2>Failed trials</h2>", table(fails)]
    missing = missing_pairs(data)
    if missing:
        parts += ["<h2>Not finished</h2>", f"<p>{esc(', '.join(missing))}</p>"]
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- files


def write_csv(path: Path, table: pd.DataFrame) -> None:
    write_with(path, lambda tmp: table.to_csv(tmp, index=False))


def write_report(data: ReportData, out_dir: Path, gallery: bool = True) -> pd.DataFrame:
    """Write trials.csv, summary.csv, report.md, report.html, ap.png, convergence.png and
    forest.png (and heatmap.png, gallery.png when the trials carry what they need); return the
    summary (one row per arm, every statistic, fractions not points). The verdicts are those of
    `data.rule` (the study's stored rule), computed once here for every view of them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(data.trials, data.arms, data.baseline)
    done = completed(data.trials)
    data.decisions = decisions_for(data, data.rule) if data.rule is not None else []
    comps = list(data.rule.comparisons) if data.rule is not None else \
        comparisons(data.arm_set) if data.arm_set is not None else []
    data.sections = findings.verdict_sections(data, data.decisions)
    data.sections += findings.breakdown_sections(data, done, comps, data.decisions, out_dir, plot_heatmap)
    data.sections += findings.gallery_section(data, done, data.decisions, out_dir) if gallery else []
    trials = data.trials.sort_values("trial") if not data.trials.empty else data.trials
    write_csv(out_dir / "trials.csv", trials)
    write_csv(out_dir / "summary.csv", summary)
    data.meta.setdefault("generated", datetime.now().strftime("%Y-%m-%d %H:%M"))
    write_text(out_dir / "report.md", render_markdown(data, summary))
    write_text(out_dir / "report.html", render_html(data, summary))
    plot_ap(data.name, data.baseline, summary, completed(data.trials), out_dir / "ap.png")
    plot_convergence(data.name, data.arms, data.baseline, data.history, out_dir / "convergence.png")
    plot_forest(data.name, data.baseline, summary, out_dir / "forest.png", descriptive=data.rule is not None)
    return summary


def render(storage_url: str, name: str, out_dir: Path, explore: tuple[float | None, str | None] | None = None,
           reason: str = "", gallery: bool = True) -> tuple[ReportData, pd.DataFrame]:
    """Rebuild `out_dir`'s report from storage alone; returns the data and the per-arm summary.

    A sequential study's verdicts are always those of its stored rule; `explore` (margin, measure:
    `ablate report --margin/--decide-on`) adds a labelled exploratory view beside them when it
    differs from the rule. A fixed-seed study stored no rule: `explore` gives it one at report time
    (the tmixture interval is valid at any number of seeds), and the report says where it came from."""
    from dinokit.ablate.sequential import check_rule, stored_rule
    from dinokit.ablate.study import read_trials, safe_url

    spec, records = read_trials(storage_url, name)
    rule = stored_rule(storage_url, name, spec.arm_set)
    sequential = bool(spec.meta.get("sequential", False)) or rule is not None
    seeds = sorted({r["seed"] for r in records}) if sequential else spec.seeds
    meta = {**{k: v for k, v in spec.meta.items() if k not in ("sequential", "rule")}, "seeds": ", ".join(map(str, seeds)),
            "storage": safe_url(storage_url)}
    data = report_data(name, spec.arm_set, spec.base, seeds, records, meta)
    data.sequential, data.rule, data.reason = sequential, rule, reason
    if explore is not None and explore != (None, None):
        margin, measure = explore
        if rule is None:
            asked = Rule(1.0 if margin is None else margin, measure or "AP", tuple(comparisons(spec.arm_set)),
                         max(2, len(seeds)))
            check_rule(asked, cap=False)
            data.rule = asked
            data.rule_note = ("This study ran a fixed number of seeds and stored no rule: this one was given on "
                              "`ablate report` after the data was seen.")
        else:
            asked = Rule(rule.margin if margin is None else margin, measure or rule.measure, rule.comparisons,
                         rule.max_seeds, rule.kind, rule.alpha, rule.rho)
            check_rule(asked, cap=False)
            data.explore = asked if (asked.margin, asked.measure) != (rule.margin, rule.measure) else None
    return data, write_report(data, Path(out_dir), gallery)
