"""TIDE's error types of one set of detections, and the AP each costs (Bolya et al. 2020, "TIDE: A
General Toolbox for Identifying Object Detection Errors", section 2; the rules as the authors'
`tidecv` 1.0.1 applies them, which tests/test_ablate_error_types_tidecv.py checks on the same
detections). Named error_types, not errors: dinokit/errors.py holds the user-facing exceptions.

Per image, the ground truths marked `iscrowd` are ignore regions and the rest are objects. The
detections are ranked by score and the first MAX_DETS (100, COCO's and TIDE's cap) are evaluated,
with no score threshold, as AP does: a ranking's low-scored mistakes cost little, so the measure
carries no calibration. Each detection, in score order, is a true positive when it overlaps an
object of its class that no higher-scored detection took with IoU >= FG (the best such object).
A detection that is not, and that lies on an ignore region of its class (intersection over the
detection's area > FG), is ignored: neither a true positive nor an error. Any other detection is,
in TIDE's order of tests, with IoU_max its highest IoU with objects of the kind named:
  loc    BG <= IoU_max <= FG with objects of its class (localised badly, the class right),
  cls    IoU_max >= FG with objects of another class (localised well, the class wrong),
  dupl   IoU_max >= FG with objects of its class that a higher-scored detection took,
  bkg    IoU_max <= BG with every object (or the image has none),
  both   anything else (both wrong: BG < IoU_max < FG with objects of another class only).
An object is `missed` when no true positive took it and no loc or cls error points at it while it
is free; a `both` error does not cover its object (its target is a guess), so that object counts
as missed too.

dAP (TIDE's measure): the AP50 gained when every error of one type is fixed and nothing else,
in AP points. Fixing a loc or cls error turns it into a true positive of its object's class when
the object is free and this is the highest-scored such error on it; any other error of the type
is removed. A dupl, bkg or both error is removed; a missed object is removed from the ground
truth. AP50 is TIDE's: per class, precision made monotone and read at the 101 recall points
0, 0.01, ..., 1 (COCO's rule), averaged over the classes that have ground truth or detections.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FG, BG = 0.5, 0.1  # TIDE's foreground and background IoU thresholds
MAX_DETS = 100  # detections evaluated per image, the highest-scored first
TYPES = ("cls", "loc", "both", "dupl", "bkg", "missed")  # TIDE's order
DAP = tuple(f"dAP_{t}" for t in TYPES)  # the AP50 points fixing each type gains (the report's rows)
COUNTS = tuple(f"n_{t}" for t in TYPES)  # how many errors of each type
RECALLS = np.arange(101) / 100  # (101,) the recall points AP is read at


@dataclass
class ImageErrors:
    """One image's verdicts: per evaluated detection (score order) and per object (non-crowd)."""

    det_class: list[int] = field(default_factory=list)
    det_score: list[float] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)  # "tp", "ignored" or one of TYPES[:5]
    fix_class: list[int] = field(default_factory=list)  # class it becomes a TP of when its type is fixed; -1 removed
    gt_class: list[int] = field(default_factory=list)
    missed: list[bool] = field(default_factory=list)


def _boxes(items: list[dict[str, Any]]) -> np.ndarray:
    return np.asarray([[float(v) for v in d["bbox"]] for d in items], dtype=np.float64).reshape(-1, 4)  # (N, 4) xywh


def _iou(dets: list[dict[str, Any]], gts: list[dict[str, Any]], crowd: bool) -> np.ndarray:
    """(D, G) IoU by pycocotools (as COCOeval and tidecv); `crowd`: intersection over the detection's area."""
    from pycocotools import mask

    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    return np.asarray(mask.iou(_boxes(dets), _boxes(gts), [int(crowd)] * len(gts)), dtype=np.float64)


def judge_image(gts: list[dict[str, Any]], dets: list[dict[str, Any]], max_dets: int = MAX_DETS) -> ImageErrors:
    """TIDE's verdict on each detection and object of one image (COCO dicts: bbox xywh pixels,
    category_id, iscrowd; detections also score)."""
    regions = [g for g in gts if g.get("iscrowd", 0)]
    gts = [g for g in gts if not g.get("iscrowd", 0)]
    dets = sorted(dets, key=lambda d: -float(d["score"]))[:max_dets]
    out = ImageErrors(det_class=[int(d["category_id"]) for d in dets], det_score=[float(d["score"]) for d in dets],
                      gt_class=[int(g["category_id"]) for g in gts])
    det_cls, gt_cls = np.asarray(out.det_class, dtype=np.int64), np.asarray(out.gt_class, dtype=np.int64)
    iou = _iou(dets, gts, crowd=False)  # (D, G)
    same = det_cls[:, None] == gt_cls[None, :]  # (D, G)
    same_iou, other_iou = np.where(same, iou, 0.0), np.where(same, 0.0, iou)  # (D, G) each
    taken = np.zeros(len(gts), dtype=bool)
    kind = ["" for _ in dets]
    for i in range(len(dets)):
        free = np.where(taken, 0.0, same_iou[i])  # (G,)
        if len(gts) and free.max() >= FG:
            taken[int(free.argmax())] = True
            kind[i] = "tp"
    region_iou = _iou(dets, regions, crowd=True)  # (D, R)
    region_cls = np.asarray([int(r["category_id"]) for r in regions], dtype=np.int64)
    on_region = ((region_iou > FG) & (det_cls[:, None] == region_cls[None, :])).any(axis=1)  # (D,)
    covered = np.zeros(len(gts), dtype=bool)  # a free object a loc / cls error points at
    fix = [-1 for _ in dets]
    for i in range(len(dets)):
        if kind[i]:
            continue
        if on_region[i]:
            kind[i] = "ignored"
            continue
        target = -1
        if not len(gts):
            kind[i] = "bkg"
        elif BG <= same_iou[i].max() <= FG:
            kind[i], target = "loc", int(same_iou[i].argmax())
        elif other_iou[i].max() >= FG:
            kind[i], target = "cls", int(other_iou[i].argmax())
        elif (same_iou[i] * taken).max() >= FG:
            kind[i] = "dupl"
        elif iou[i].max() <= BG:
            kind[i] = "bkg"
        else:
            kind[i] = "both"
        if target >= 0 and not taken[target]:
            if not covered[target]:  # the first in score order is the highest-scored one: it is fixed
                fix[i] = int(gt_cls[target])
            covered[target] = True
    out.kind, out.fix_class = kind, fix
    out.missed = [bool(m) for m in ~taken & ~covered]
    return out


def classify_image(gts: list[dict[str, Any]], dets: list[dict[str, Any]], max_dets: int = MAX_DETS) -> dict[str, int]:
    """Counts for one image: tp, ignored, each of TYPES, gt (objects) and dets (evaluated, not ignored)."""
    judged = judge_image(gts, dets, max_dets)
    counts = {name: judged.kind.count(name) for name in ("tp", "ignored", *TYPES[:5])}
    counts.update(missed=sum(judged.missed), gt=len(judged.gt_class), dets=len(judged.kind) - counts["ignored"])
    return counts


def average_precision(scores: np.ndarray, tp: np.ndarray, positives: int) -> float:
    """TIDE's (and COCO's) AP in points of (D,) detections of one class against `positives` objects:
    precision made monotone, read at RECALLS (0 beyond the last recall reached); 0 without objects."""
    if positives <= 0 or not len(scores):
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(tp[order].astype(np.float64))  # (D,) true positives among the first n
    precision = hits / np.arange(1, len(hits) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or beyond
    at = np.searchsorted(hits / positives, RECALLS, side="left")  # (101,) first detection reaching each recall
    return float(np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0).mean() * 100)


def _mean_ap(cls: np.ndarray, scores: np.ndarray, tp: np.ndarray, positives: dict[int, int],
             classes: list[int]) -> float:
    """mAP over `classes` that still have objects or detections (TIDE's rule; NaN when none)."""
    aps = [average_precision(scores[cls == c], tp[cls == c], positives.get(c, 0)) for c in classes
           if positives.get(c, 0) > 0 or bool((cls == c).any())]
    return float(np.mean(aps)) if aps else float("nan")


def tide_errors(gt: dict[str, Any], detections: list[dict[str, Any]], max_dets: int = MAX_DETS) -> dict[str, float]:
    """TIDE on a dataset: `gt` a COCO ground-truth dict (images, annotations), `detections` COCO
    results. Returns AP50 (TIDE's), dAP_<type> for each of TYPES (AP50 points gained by fixing
    that type alone), n_<type> (counts) and the totals gt, dets, tp and ignored."""
    anns: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in gt.get("annotations", []):
        anns[int(ann["image_id"])].append(ann)
    dets_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for d in detections:
        dets_of[int(d["image_id"])].append(d)
    judged = [judge_image(anns[int(im["id"])], dets_of[int(im["id"])], max_dets) for im in gt.get("images", [])]
    kind = np.asarray([k for j in judged for k in j.kind], dtype=object)
    cls = np.asarray([c for j in judged for c in j.det_class], dtype=np.int64)
    scores = np.asarray([s for j in judged for s in j.det_score], dtype=np.float64)
    fix = np.asarray([f for j in judged for f in j.fix_class], dtype=np.int64)
    positives: dict[int, int] = defaultdict(int)
    missed: dict[int, int] = defaultdict(int)
    for j in judged:
        for c, m in zip(j.gt_class, j.missed):
            positives[c] += 1
            missed[c] += int(m)
    counted = kind != "ignored"  # (D,) ignored detections are out of AP and of every count
    classes = sorted(set(positives) | set(cls[counted].tolist()))
    base = _mean_ap(cls[counted], scores[counted], kind[counted] == "tp", positives, classes)
    out: dict[str, float] = {"AP50": base}
    for name in TYPES:
        if name == "missed":
            fixed = {c: positives[c] - missed[c] for c in positives}
            gained = _mean_ap(cls[counted], scores[counted], kind[counted] == "tp", fixed, classes)
        else:
            become_tp = (kind == name) & (fix >= 0)  # only loc / cls errors have a fix class
            keep = counted & ((kind != name) | become_tp)
            new_cls = np.where(become_tp, fix, cls)
            gained = _mean_ap(new_cls[keep], scores[keep], (kind == "tp")[keep] | become_tp[keep], positives, classes)
        # a negative gain is the 101-point grid's rounding: 0, as TIDE; NaN when no class is left
        out[f"dAP_{name}"] = max(gained - base, 0.0) if gained == gained and base == base else float("nan")
    for name in TYPES[:5]:
        out[f"n_{name}"] = float((kind == name).sum())
    out["n_missed"] = float(sum(missed.values()))
    out.update(gt=float(sum(positives.values())), dets=float(counted.sum()), tp=float((kind == "tp").sum()),
               ignored=float((kind == "ignored").sum()))
    return out
