"""The report's answers beyond the per-arm table: verdicts, per-class/size and error-type
differences, the heatmap and the gallery. Each is a `Section` that report.py renders in
markdown and HTML alike; the figures are written here (through dinokit/files.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from dinokit.ablate.breakdown import BREAKDOWN_NOTE, analysis_values, breakdown, breakdown_table
from dinokit.ablate.decide import RHO, decisions_table, rule_text
from dinokit.ablate.steps import comparisons


@dataclass
class Section:
    title: str
    table: pd.DataFrame | None = None
    note: str = ""
    images: list[tuple[str, str]] = field(default_factory=list)  # (file name, alt text)
    left: tuple[str, ...] = ()  # left-aligned columns


def verdict_section(data: Any, margin: float, measure: str, reason: str = "", rho: float = RHO) -> Section:
    """The verdict of every comparison under `margin` (COCO points) on `measure`."""
    from dinokit.ablate.sequential import MEASURES, decisions_for

    decisions = decisions_for(data, margin, MEASURES[measure], rho)
    table = decisions_table(decisions, margin, 100.0, measure, rho)
    note = rule_text(margin, measure, len(decisions), rho=rho) + (f" The study stopped because {reason}." if reason else "")
    return Section("Verdicts", table, note, left=("comparison", "verdict"))


def breakdown_sections(data: Any, done: pd.DataFrame, out_dir: Path, plot: Callable[..., None]) -> list[Section]:
    """Per class and size (table + heatmap.png) and per error type, when trials carry analyses."""
    if data.arm_set is None or not data.analyses or done.empty:
        return []
    diffs = breakdown(analysis_values(done, data.analyses), comparisons(data.arm_set))
    if diffs.empty:
        return []
    ap = diffs[diffs["kind"].isin(("class", "size"))]
    plot(data.name, ap, out_dir / "heatmap.png")
    return [Section("Per class and size", breakdown_table(diffs, ("class", "size")), BREAKDOWN_NOTE,
                    [("heatmap.png", "paired differences per class and size")], ("class / size / error",)),
            Section("Error types", breakdown_table(diffs, ("error",)),
                    "TIDE-style error types of each trial's best checkpoint (see above); a negative "
                    "difference means fewer errors of that type. CDN's claim is a lower dupl_rate.",
                    left=("class / size / error",))]


def gallery_section(data: Any, done: pd.DataFrame, out_dir: Path) -> list[Section]:
    """gallery.png when every arm of one seed still has its checkpoint on this machine."""
    from dinokit.ablate.gallery import make_gallery

    if done.empty or "run_dir" not in done:
        return []
    try:
        made = make_gallery(done, data.arms, out_dir / "gallery.png")
    except Exception as exc:  # the numbers stand without pictures
        return [Section("Gallery", note=f"no gallery: {type(exc).__name__}: {exc}")]
    if made is None:
        return []
    return [Section("Gallery", note="The validation images with the most objects, the ground truth first, then "
                    "each arm's best checkpoint of one seed (score >= 0.3). Below: each arm's query selection on "
                    "the first image (dinokit explain): the encoder's objectness per level and the top-K anchors "
                    "the decoder starts from.",
                    images=[("gallery.png", "gallery"), ("selection.png", "query selection per arm")])]
