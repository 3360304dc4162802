"""What changed, beyond one AP number: per class, per object size and per error type.

After training, each trial's best checkpoint is evaluated once more on the validation split
(`analyse_checkpoint`), and the per-class AP, APs/APm/APl and TIDE's error types (dAP) are
stored with the trial. The report then pairs them by seed like every other number
(`breakdown_table`): for each comparison of the study, the mean per-seed difference and its 95%
paired-t interval. The table is exploratory: dozens of intervals without a multiplicity correction
(about 1 in 20 excludes 0 by chance), so no cell is marked as significant and none is a verdict.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from dinokit.ablate.error_types import DAP, tide_errors
from dinokit.ablate.stats import PairedDiff, paired_difference

SIZES = ("APs", "APm", "APl")
ERRORS = DAP  # TIDE: the AP50 points fixing each error type gains


def analyse_checkpoint(path: str | Path, device: str = "auto") -> dict[str, Any]:
    """Per-class AP, APs/APm/APl and error counts of a checkpoint on its validation split."""
    import dinokit
    from dinokit.data.coco import build_dataset, resolve_source

    detector = dinokit.load(path, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        dets_file = Path(tmp) / "detections.json"
        metrics = detector.evaluate(detections=dets_file)
        detections = json.loads(dets_file.read_text())
    cfg = detector.config
    gt = build_dataset(resolve_source(cfg.data), cfg.data, "val", train=False).coco.dataset
    return {"per_class": {k: float(v) for k, v in metrics.get("per_class", {}).items()},
            **{s: _number(metrics.get(s)) for s in SIZES}, "errors": tide_errors(gt, detections)}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else None


def analysis_values(trials: pd.DataFrame, analyses: dict[int, dict[str, Any]]) -> pd.DataFrame:
    """Long table (arm, seed, kind, key, value) from per-trial analyses ({trial: analysis});
    kind is class, size or error. Undefined values (a size without objects) are NaN."""
    rows = []
    for t in trials.itertuples():
        a = analyses.get(int(t.trial))
        if not a:
            continue
        items = [("class", k, v) for k, v in a.get("per_class", {}).items()]
        items += [("size", s, a.get(s)) for s in SIZES]
        items += [("error", e, a.get("errors", {}).get(e)) for e in ERRORS]
        rows += [{"arm": t.arm, "seed": t.seed, "kind": kind, "key": key,
                  "value": math.nan if value is None else float(value)} for kind, key, value in items]
    return pd.DataFrame(rows, columns=["arm", "seed", "kind", "key", "value"])


def breakdown(values: pd.DataFrame, comparisons: list[tuple[str, str, str]]) -> pd.DataFrame:
    """One row per (kind, key, comparison): paired mean difference, 95% interval, pairs."""
    rows = []
    if values.empty:
        return pd.DataFrame(columns=["kind", "key", "comparison", "mean", "low", "high", "n"])
    for (kind, key), g in values.groupby(["kind", "key"], sort=False):
        wide = g.pivot_table(index="seed", columns="arm", values="value", aggfunc="last", dropna=False)
        for name, arm, ref in comparisons:
            diff = (paired_difference(wide[arm], wide[ref]) if arm in wide and ref in wide
                    else PairedDiff(math.nan, math.nan, math.nan, 0))
            rows.append({"kind": kind, "key": key, "comparison": name, "mean": diff.mean, "low": diff.low,
                         "high": diff.high, "n": diff.n})
    return pd.DataFrame(rows)


def breakdown_table(diffs: pd.DataFrame, kinds: tuple[str, ...]) -> pd.DataFrame:
    """The human table for `kinds`: rows = classes / sizes / error types, columns = comparisons,
    cells 'mean [low, high]' (AP in COCO points, errors per 100 objects), n/a where undefined; no
    significance marks (exploratory: see the module's note)."""
    from dinokit.ablate.format import signed

    part = diffs[diffs["kind"].isin(kinds)] if not diffs.empty else diffs
    if part.empty:
        return pd.DataFrame()

    def cell(r: pd.Series) -> str:
        scale = 1.0 if r["kind"] == "error" else 100.0
        if pd.isna(r["mean"]):
            return "n/a"
        if pd.isna(r["low"]):
            return f"{signed(r['mean'], scale)} (1 pair)"
        return f"{signed(r['mean'], scale)} [{signed(r['low'], scale)}, {signed(r['high'], scale)}]"

    table = part.assign(cell=part.apply(cell, axis=1))
    wide = table.pivot(index="key", columns="comparison", values="cell")
    wide = wide.reindex(index=list(dict.fromkeys(table["key"])), columns=list(dict.fromkeys(table["comparison"])))
    return wide.reset_index().rename(columns={"key": "class / size / error"}).fillna("n/a")


BREAKDOWN_NOTE = (
    "Per class and object size: AP of each trial's best checkpoint on the validation split (COCO "
    "points); error types: TIDE's dAP (dAP_cls, dAP_loc, dAP_both, dAP_dupl, dAP_bkg, dAP_missed), the "
    "AP50 points gained by fixing every error of that type alone, over every detection up to 100 per image "
    "(no score threshold). Each cell is the mean paired "
    "difference (arm − reference, same seed) with its 95% paired-t interval; n/a: undefined (no objects "
    "of that size, or a trial analysed before dAP was stored). Exploratory: dozens of intervals without a multiplicity correction, so about 1 in 20 "
    "excludes 0 by chance; none is a verdict and none is marked. Diverged trials have no analysis."
)
