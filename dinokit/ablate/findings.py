"""The report's answers beyond the per-arm table: verdicts, per-class/size and error-type
differences, the heatmap and the gallery. Each is a `Section` that report.py renders in
markdown and HTML alike; the figures are written here (through dinokit/files.py).

Verdicts come only from the study's stored rule (`data.rule`, through verdicts.decisions_for);
everything else here is descriptive or exploratory and says so, and the captions repeat the
verdicts in the same words instead of suggesting others."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from dinokit.ablate.breakdown import BREAKDOWN_NOTE, analysis_values, breakdown, breakdown_table
from dinokit.ablate.decide import NOT_LEARNED, Comparison, Decision
from dinokit.ablate.records import ReportData
from dinokit.ablate.verdicts import decisions_for, decisions_table, learning, rule_text, verdict_line


@dataclass
class Section:
    title: str
    table: pd.DataFrame | None = None
    note: str = ""
    images: list[tuple[str, str]] = field(default_factory=list)  # (file name, alt text)
    left: tuple[str, ...] = ()  # left-aligned columns
    top: bool = False  # shown above the per-arm table (the verdicts)


def verdict_sections(data: ReportData, decisions: list[Decision]) -> list[Section]:
    """The Verdicts section of the study's rule and, when `ablate report` asked for another
    margin or measure on a sequential study, the exploratory view beside it."""
    if data.rule is None:
        return []
    _, budget = learning(data)
    note = rule_text(data.rule) + (f" {data.rule_note}" if data.rule_note else "")
    if budget and any(d.verdict == NOT_LEARNED for d in decisions):
        note += f" The arms did not learn at this budget: {budget}."
    if data.reason:
        note += f" The study stopped because {data.reason}."
    out = [Section("Verdicts", decisions_table(decisions, data.rule), note, left=("comparison", "verdict"), top=True)]
    if data.explore is not None:
        view = decisions_for(data, data.explore)
        out.append(Section(
            f"Exploratory view: margin ±{data.explore.margin:g} on {data.explore.measure} (not the study's verdicts)",
            decisions_table(view, data.explore),
            "Asked on `ablate report` after the data was seen: the same kind of interval, alpha and comparisons as "
            "the study's rule, with another margin or measure. The study's verdicts are the ones above; this view "
            "never replaces them.", left=("comparison", "verdict"), top=True))
    return out


def _verdicts_caption(data: ReportData, decisions: list[Decision]) -> str:
    if data.rule is None or not decisions:
        return ""
    return f" The study's verdicts ({data.rule.measure}, ±{data.rule.margin:g}): {verdict_line(decisions, data.rule)}."


def breakdown_sections(data: ReportData, done: pd.DataFrame, comps: list[Comparison], decisions: list[Decision],
                       out_dir: Path, plot: Callable[..., None]) -> list[Section]:
    """Per class and size (table + heatmap.png) and per error type, when trials carry analyses.
    Exploratory: dozens of uncorrected intervals, so no cell is marked as significant."""
    if not data.analyses or done.empty:
        return []
    diffs = breakdown(analysis_values(done, data.analyses), comps)
    if diffs.empty:
        return []
    ap = diffs[diffs["kind"].isin(("class", "size"))]
    plot(data.name, ap, out_dir / "heatmap.png")
    caption = _verdicts_caption(data, decisions)
    return [Section("Per class and size (exploratory)", breakdown_table(diffs, ("class", "size")),
                    BREAKDOWN_NOTE + caption,
                    [("heatmap.png", "exploratory paired differences per class and size (not verdicts)")],
                    ("class / size / error",)),
            Section("Error types (exploratory)", breakdown_table(diffs, ("error",)),
                    "TIDE's error types of each trial's best checkpoint (Bolya et al. 2020): per type, the "
                    "AP50 points gained by fixing all its errors alone (dAP; every detection up to 100 per image, "
                    "ranked by score, no threshold). A negative difference means the arm loses less AP to that "
                    "type. CDN's claim is a lower dAP_dupl. Exploratory "
                    "like the table above." + caption, left=("class / size / error",))]


def gallery_section(data: ReportData, done: pd.DataFrame, decisions: list[Decision], out_dir: Path) -> list[Section]:
    """gallery.png when every arm of one seed still has its checkpoint on this machine."""
    from dinokit.ablate.gallery import make_gallery

    if done.empty or "run_dir" not in done:
        return []
    shown = done[done["diverged"].isna()] if "diverged" in done else done  # a diverged run has no model to show
    try:
        made = make_gallery(shown, data.arms, out_dir / "gallery.png")
    except Exception as exc:  # the numbers stand without pictures
        return [Section("Gallery", note=f"no gallery: {type(exc).__name__}: {exc}")]
    if made is None:
        return []
    return [Section("Gallery", note="The validation images with the most objects, the ground truth first, then "
                    "each arm's best checkpoint of one seed (score >= 0.3): pictures, not evidence." +
                    _verdicts_caption(data, decisions) + " Below: each arm's query selection on the first image "
                    "(dinokit explain): the encoder's objectness per level and the top-K anchors the decoder starts "
                    "from.", images=[("gallery.png", "gallery"), ("selection.png", "query selection per arm")])]
