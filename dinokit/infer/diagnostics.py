"""What a practitioner reads after evaluation: precision, recall and F1 at the F1-optimal score
threshold, the PR curves and the confusion matrix, all from pycocotools' COCOeval.

No matcher of our own for what P, R and AP count: per-class P/R/F1 against the score threshold
come from COCOeval's per-detection match results (`evalImgs`: dtMatches / dtScores / dtIgnore /
gtIgnore at IoU 0.5, the records that its `accumulate` turns into AP), the PR curve is its
accumulated `precision` array, and the confusion matrix's diagonal is the same per-class match
records above the threshold (so it equals the per-class true positives behind P and R); only the
detections and objects those leave unmatched are then paired across classes for the off-diagonal
cells.

The precision *array* is not used for P at a threshold: it is COCO's interpolated envelope (the
best precision at any higher recall), which overstates the precision of the detections actually
kept (e.g. 0.75 instead of 2/3 in tests/test_infer_diagnostics.py).

Reusable from a COCO ground truth and COCO-format detections: `diagnose(coco_gt, detections)`.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IOU = 0.5  # the IoU at which P/R/F1, the PR curves and the confusion matrix are taken
THRESHOLDS = np.linspace(0.0, 1.0, 1001)  # score thresholds of the F1 curve
BACKGROUND = "background"


def run_cocoeval(coco_gt: Any, detections: list[dict[str, Any]]) -> Any:
    """A per-class COCOeval bbox after `evaluate()` and `accumulate()` (silenced)."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([plain_detection(d) for d in detections])
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def plain_detection(d: dict[str, Any]) -> dict[str, Any]:
    """A COCO result dict with plain Python numbers (loadRes wants lists, not tensors)."""
    return {
        "image_id": int(d["image_id"]),
        "category_id": int(d["category_id"]),
        "bbox": [float(v) for v in d["bbox"]],
        "score": float(d["score"]),
    }


# --------------------------------------------------------------------------- P / R / F1


@dataclass
class ScoreCurves:
    """Per class, precision / recall / F1 at each of `thresholds` (detections scoring >= it kept)."""

    class_names: list[str]  # classes with ground truth, in category-id order
    thresholds: np.ndarray  # (S,)
    precision: np.ndarray  # (K, S)
    recall: np.ndarray  # (K, S)
    f1: np.ndarray  # (K, S)

    @property
    def macro_f1(self) -> np.ndarray:
        """(S,) mean F1 over the classes at each threshold."""
        return self.f1.mean(axis=0) if len(self.class_names) else np.zeros_like(self.thresholds)

    def best_threshold(self) -> float:
        """The middle of the first run of thresholds that reaches the highest macro F1: the run lies
        between two detections' scores, and its middle is the least arbitrary point in it. NaN when
        no threshold finds a true positive."""
        macro = self.macro_f1
        if not len(macro) or macro.max() <= 0:  # no true positive at any threshold: no threshold means anything
            return float("nan")
        best = np.flatnonzero(np.isclose(macro, macro.max()))
        end = best[0]
        while end + 1 < len(macro) and end + 1 in set(best.tolist()):
            end += 1
        return float(np.round((self.thresholds[best[0]] + self.thresholds[end]) / 2, 4))

    def at(self, threshold: float) -> dict[str, dict[str, float]]:
        """{class: {P, R, F1}} with the detections scoring >= `threshold` (exact, not on the grid)."""
        return {name: dict(zip(("P", "R", "F1"), _prf(*self._matches[name], threshold)))
                for name in self.class_names}

    _matches: dict[str, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict, repr=False)


def _prf(scores: np.ndarray, tp: np.ndarray, positives: int, threshold: float | np.ndarray) -> tuple[Any, Any, Any]:
    """Precision, recall, F1 of detections with `scores` (descending) and true-positive flags `tp`
    against `positives` ground truths, keeping scores >= `threshold` (a float or an (S,) array).
    No detection kept: precision 0 (as scikit-learn's zero_division=0)."""
    cum_tp = np.concatenate([[0], np.cumsum(tp)])  # (D+1,) true positives among the first n
    kept = np.searchsorted(-scores, -np.asarray(threshold, dtype=float), side="right")  # n with score >= t
    tps = cum_tp[kept].astype(float)
    precision = np.divide(tps, kept, out=np.zeros_like(tps), where=kept > 0)
    recall = tps / positives if positives else np.zeros_like(tps)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(tps), where=denominator > 0)
    if np.ndim(threshold) == 0:
        return float(precision), float(recall), float(f1)
    return precision, recall, f1


def score_curves(evaluator: Any, names: dict[int, str], thresholds: np.ndarray = THRESHOLDS) -> ScoreCurves:
    """P/R/F1 against the score threshold per class from a per-class COCOeval's `evalImgs` at IoU 0.5,
    area "all", maxDets 100 (the records AP is accumulated from). `names`: {category id: name} of
    the classes to report (those with ground truth)."""
    p = evaluator.params
    t = int(np.argmin(np.abs(np.asarray(p.iouThrs) - IOU)))
    n_images, n_areas = len(p.imgIds), len(p.areaRng)
    matches: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    for k, cat_id in enumerate(p.catIds):
        if cat_id not in names:
            continue
        records = [e for e in evaluator.evalImgs[k * n_areas * n_images:(k * n_areas + 1) * n_images] if e is not None]
        scores = np.concatenate([e["dtScores"] for e in records]) if records else np.zeros(0)
        matched = np.concatenate([e["dtMatches"][t] for e in records]) if records else np.zeros(0)
        ignored = np.concatenate([e["dtIgnore"][t] for e in records]).astype(bool) if records else np.zeros(0, bool)
        positives = int(sum(int(np.count_nonzero(e["gtIgnore"] == 0)) for e in records))
        order = np.argsort(-scores, kind="mergesort")  # COCOeval's own order
        scores, matched, ignored = scores[order], matched[order], ignored[order]
        scores, tp = scores[~ignored], matched[~ignored] > 0  # a match to a crowd region counts neither way
        matches[names[cat_id]] = (scores, tp, positives)
    class_names = list(matches)
    rows = [_prf(*matches[n], thresholds) for n in class_names]
    empty = np.zeros((0, len(thresholds)))
    curves = ScoreCurves(
        class_names, thresholds,
        np.array([r[0] for r in rows]) if rows else empty, np.array([r[1] for r in rows]) if rows else empty,
        np.array([r[2] for r in rows]) if rows else empty,
    )
    curves._matches = matches
    return curves


def empty_curves(names: dict[int, str]) -> ScoreCurves:
    """The curves of no detections: every P, R and F1 zero."""
    zeros = np.zeros((len(names), len(THRESHOLDS)))
    curves = ScoreCurves(list(names.values()), THRESHOLDS, zeros, zeros.copy(), zeros.copy())
    curves._matches = {n: (np.zeros(0), np.zeros(0, bool), 0) for n in names.values()}
    return curves


def threshold_metrics(curves: ScoreCurves) -> dict[str, Any]:
    """The F1-optimal threshold and, at it, macro P / R / F1 and per-class P / R / F1."""
    threshold = curves.best_threshold()
    if threshold != threshold:  # NaN
        zeros = {"P": 0.0, "R": 0.0, "F1": 0.0}
        return {"score_threshold": threshold, **zeros, "per_class_prf": {n: dict(zeros) for n in curves.class_names}}
    per_class = curves.at(threshold)
    macro = {key: float(np.mean([v[key] for v in per_class.values()])) for key in ("P", "R", "F1")}
    return {"score_threshold": threshold, **macro, "per_class_prf": per_class}


# --------------------------------------------------------------------------- confusion matrix


def confusion_matrix(coco_gt: Any, detections: list[dict[str, Any]], threshold: float,
                     cat_ids: list[int], evaluator: Any = None) -> np.ndarray:
    """(K+1, K+1) counts: rows the true class, columns the predicted class, the last row and
    column background, for the detections scoring >= `threshold` at IoU 0.5.

    The diagonal is the per-class P/R's own matching (a per-class COCOeval's match records, the
    ones `score_curves` reads), so it equals each class's true positives at the threshold: a box
    of the wrong class cannot take an object from a right-class box. Then, per image, each
    detection that matched nothing, highest score first, takes the unmatched object of another
    class it overlaps most (IoU >= 0.5): (true, predicted). A detection left over lands on
    (background, predicted), an object left over on (true, background). So row k sums to class k's
    objects and column k to its detections (those COCOeval keeps: 100 per class and image).
    Crowd regions and the detections COCOeval matches to them count neither way.
    `evaluator`: a per-class COCOeval of these detections (any threshold), to reuse."""
    index = {c: i for i, c in enumerate(cat_ids)}
    k = len(cat_ids)
    matrix = np.zeros((k + 1, k + 1), dtype=np.int64)
    kept = [d for d in detections if float(d["score"]) >= threshold and int(d["category_id"]) in index]
    if not kept:
        for a in coco_gt.dataset.get("annotations", []):
            if not a.get("iscrowd", 0) and int(a["category_id"]) in index:
                matrix[index[int(a["category_id"])], k] += 1
        return matrix
    evaluator = evaluator if evaluator is not None else run_cocoeval(coco_gt, kept)
    p = evaluator.params
    t = int(np.argmin(np.abs(np.asarray(p.iouThrs) - IOU)))
    n_images, n_areas = len(p.imgIds), len(p.areaRng)
    left_dets: dict[int, list[tuple[float, int]]] = {}  # image -> (score, detection id) unmatched
    left_gts: dict[int, list[int]] = {}  # image -> ground-truth ids unmatched
    for c, cat_id in enumerate(p.catIds):
        if cat_id not in index:
            continue
        for record in evaluator.evalImgs[c * n_areas * n_images:(c * n_areas + 1) * n_images]:  # area "all"
            if record is None:
                continue
            image = int(record["image_id"])
            for dt_id, score, gt_id, ignore in zip(record["dtIds"], record["dtScores"], record["dtMatches"][t],
                                                   record["dtIgnore"][t]):
                if ignore or score < threshold:
                    continue
                if gt_id > 0:
                    matrix[index[cat_id], index[cat_id]] += 1
                else:
                    left_dets.setdefault(image, []).append((float(score), int(dt_id)))
            for gt_id, dt_id, ignore in zip(record["gtIds"], record["gtMatches"][t], record["gtIgnore"]):
                if not ignore and not _matched_above(evaluator, dt_id, threshold):
                    left_gts.setdefault(image, []).append(int(gt_id))
    for image in set(left_dets) | set(left_gts):
        _cross_class(matrix, index, evaluator.cocoDt.anns, coco_gt.anns, left_dets.get(image, []),
                     left_gts.get(image, []))
    return matrix


def _matched_above(evaluator: Any, dt_id: float, threshold: float) -> bool:
    """Whether a ground truth's COCOeval match (a detection id, 0 for none) scores >= `threshold`."""
    return dt_id > 0 and float(evaluator.cocoDt.anns[int(dt_id)]["score"]) >= threshold


def _cross_class(matrix: np.ndarray, index: dict[int, int], dt_anns: dict[int, Any], gt_anns: dict[int, Any],
                 dets: list[tuple[float, int]], gts: list[int]) -> None:
    """One image's leftovers into the off-diagonal and background cells (see confusion_matrix)."""
    from pycocotools import mask

    k = len(index)
    dets = sorted(dets, key=lambda d: -d[0])
    det_cls = [index[int(dt_anns[d]["category_id"])] for _, d in dets]
    gt_cls = [index.get(int(gt_anns[g]["category_id"]), -1) for g in gts]
    iou = np.zeros((len(dets), len(gts)))  # (D, G)
    if dets and gts:
        iou = np.asarray(mask.iou([dt_anns[d]["bbox"] for _, d in dets], [gt_anns[g]["bbox"] for g in gts],
                                  [0] * len(gts)), dtype=np.float64).reshape(len(dets), len(gts))
    free = np.asarray([c >= 0 for c in gt_cls], dtype=bool)  # (G,)
    for i, predicted in enumerate(det_cls):
        other = free & (np.asarray(gt_cls) != predicted) & (iou[i] >= IOU)  # (G,)
        if other.any():
            j = int(np.argmax(np.where(other, iou[i], -1.0)))
            free[j] = False
            matrix[gt_cls[j], predicted] += 1
        else:
            matrix[k, predicted] += 1
    for j in np.flatnonzero(free):
        matrix[gt_cls[j], k] += 1


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (a row without any count stays 0)."""
    sums = matrix.sum(axis=1, keepdims=True).astype(float)
    return np.divide(matrix, sums, out=np.zeros(matrix.shape, dtype=float), where=sums > 0)


# --------------------------------------------------------------------------- everything at once


@dataclass
class Diagnostics:
    """Every number behind the diagnostic files of one evaluation."""

    metrics: dict[str, Any]  # score_threshold, P, R, F1, per_class_prf
    curves: ScoreCurves
    recall_grid: np.ndarray  # (R,) COCO's 101 recall points
    pr: dict[str, np.ndarray]  # class -> (R,) interpolated precision at IoU 0.5 (COCOeval's array)
    labels: list[str]  # confusion matrix rows / columns: the classes, then background
    confusion: np.ndarray  # (K+1, K+1) counts, rows true, columns predicted


def category_names(coco_gt: Any) -> dict[int, str]:
    """{category id: name} of the categories that have ground truth, in id order."""
    with_gt = sorted({int(a["category_id"]) for a in coco_gt.dataset.get("annotations", [])})
    return {c: str(coco_gt.cats[c]["name"]) for c in with_gt if c in coco_gt.cats}


def diagnose(coco_gt: Any, detections: list[dict[str, Any]], evaluator: Any = None) -> Diagnostics:
    """All diagnostics of `detections` (COCO result dicts) against `coco_gt` (a pycocotools COCO);
    `evaluator`: a per-class COCOeval already evaluated and accumulated on them, to reuse."""
    names = category_names(coco_gt)
    cat_ids = sorted(coco_gt.cats)  # the confusion matrix shows every class, with ground truth or not
    labels = [str(coco_gt.cats[c]["name"]) for c in cat_ids] + [BACKGROUND]
    recall_grid = np.linspace(0.0, 1.0, 101)
    if not detections or not coco_gt.getImgIds():
        curves = empty_curves(names)
        metrics = threshold_metrics(curves)
        pr = {n: np.zeros_like(recall_grid) for n in names.values()}
        confusion = confusion_matrix(coco_gt, [], 1.0, cat_ids)
        return Diagnostics(metrics, curves, recall_grid, pr, labels, confusion)
    evaluator = evaluator if evaluator is not None else run_cocoeval(coco_gt, detections)
    curves = score_curves(evaluator, names)
    metrics = threshold_metrics(curves)
    p = evaluator.params
    t = int(np.argmin(np.abs(np.asarray(p.iouThrs) - IOU)))
    precision = evaluator.eval["precision"]  # (T, R, K, A, M), -1 where a class has no ground truth
    pr = {names[c]: np.clip(precision[t, :, k, 0, -1], 0, None) for k, c in enumerate(p.catIds) if c in names}
    threshold = metrics["score_threshold"]
    confusion = confusion_matrix(coco_gt, detections, threshold if threshold == threshold else 1.0, cat_ids, evaluator)
    return Diagnostics(metrics, curves, np.asarray(p.recThrs), pr, labels, confusion)
