"""TIDE-style error types of one set of detections (Bolya et al. 2020, "TIDE: A General Toolbox
for Identifying Object Detection Errors").

`tidecv` (1.0.1, the last release, 2020) pulls opencv-python, seaborn and appdirs, which dinokit
does not otherwise need, and reports the AP each error type costs rather than the counts a paired
comparison wants; this module counts instead, following TIDE's definitions and order of tests.

Detections with score >= `score` are taken per image in descending score. Each one is a true
positive when it overlaps an unmatched ground truth of its class with IoU >= FG (the best such one
is matched); otherwise, in TIDE's order, it is:
  loc   IoU in [BG, FG) with a ground truth of its class (a box error),
  cls   IoU >= FG with a ground truth of another class,
  dupl  IoU >= FG with a ground truth of its class already matched by a higher-scoring detection,
  bkg   IoU < BG with every ground truth,
  both  anything else (IoU in [BG, FG) with a ground truth of another class only).
A ground truth that no true positive matched and that no loc, cls or both error points at is
`missed`. Counts are per 100 ground-truth objects; `dupl_rate` is duplicates per 100 kept
detections (the paper's claim for CDN: fewer duplicates).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torchvision.ops import box_iou

FG, BG = 0.5, 0.1  # TIDE's foreground and background IoU thresholds
SCORE = 0.3  # detections below this score are not counted (predict's default threshold)
TYPES = ("cls", "loc", "both", "dupl", "bkg", "missed")


def _xyxy(boxes: list[list[float]]) -> torch.Tensor:
    t = torch.tensor(boxes, dtype=torch.float64, device="cpu").reshape(-1, 4)  # (N, 4) xywh pixels
    return torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], dim=1)  # (N, 4) xyxy pixels


def classify_image(gts: list[dict[str, Any]], dets: list[dict[str, Any]]) -> dict[str, int]:
    """Counts of tp, each error type and ground truths for one image (COCO dicts: bbox xywh
    pixels, category_id; detections also score). Crowd ground truths are left out."""
    gts = [g for g in gts if not g.get("iscrowd", 0)]
    dets = sorted(dets, key=lambda d: -float(d["score"]))
    counts: dict[str, int] = defaultdict(int)
    counts["gt"], counts["dets"] = len(gts), len(dets)
    if not dets:
        counts["missed"] = len(gts)
        return dict(counts)
    if not gts:
        counts["bkg"] = len(dets)
        return dict(counts)
    iou = box_iou(_xyxy([d["bbox"] for d in dets]), _xyxy([g["bbox"] for g in gts]))  # (D, G)
    gt_cls = torch.tensor([int(g["category_id"]) for g in gts])
    matched = torch.zeros(len(gts), dtype=torch.bool)
    covered = torch.zeros(len(gts), dtype=torch.bool)  # pointed at by a loc / cls / both error
    for i, det in enumerate(dets):
        row = iou[i]  # (G,)
        same = gt_cls == int(det["category_id"])
        free = row.masked_fill(~same | matched, -1.0)
        if float(free.max()) >= FG:
            matched[int(free.argmax())] = True
            counts["tp"] += 1
            continue
        same_iou, other_iou = row.masked_fill(~same, -1.0), row.masked_fill(same, -1.0)
        if BG <= float(same_iou.max()) < FG:
            kind, target = "loc", int(same_iou.argmax())
        elif float(other_iou.max()) >= FG:
            kind, target = "cls", int(other_iou.argmax())
        elif float(same_iou.max()) >= FG:
            kind, target = "dupl", -1
        elif float(row.max()) < BG:
            kind, target = "bkg", -1
        else:
            kind, target = "both", int(other_iou.argmax())
        counts[kind] += 1
        if target >= 0:
            covered[target] = True
    counts["missed"] = int((~matched & ~covered).sum())
    return dict(counts)


def error_counts(gt: dict[str, Any], detections: list[dict[str, Any]], score: float = SCORE) -> dict[str, float]:
    """Error types over a dataset: `gt` a COCO ground-truth dict (images, annotations),
    `detections` COCO results. Per 100 ground-truth objects, plus `dupl_rate` (per 100 kept
    detections) and the raw totals `gt`, `dets`, `tp`."""
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in gt.get("annotations", []):
        by_image[int(ann["image_id"])].append(ann)
    dets_by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for d in detections:
        if float(d["score"]) >= score:
            dets_by_image[int(d["image_id"])].append(d)
    total: dict[str, int] = defaultdict(int)
    for image in gt.get("images", []):
        for key, value in classify_image(by_image[int(image["id"])], dets_by_image[int(image["id"])]).items():
            total[key] += value
    per_gt = 100.0 / total["gt"] if total["gt"] else float("nan")
    out = {kind: total[kind] * per_gt for kind in TYPES}
    out["dupl_rate"] = 100.0 * total["dupl"] / total["dets"] if total["dets"] else 0.0
    out.update(gt=float(total["gt"]), dets=float(total["dets"]), tp=float(total["tp"]))
    return out
