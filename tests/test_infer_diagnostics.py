"""Diagnostics against a hand-computed case: P/R/F1 at the F1-optimal threshold, the PR curve
and the confusion matrix with its background row and column."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO

from dinokit.infer.diagnostics import confusion_matrix, diagnose, normalise_rows, score_curves, run_cocoeval
from dinokit.infer.evaluator import evaluate_detections


def _coco(annotations: list[list[float]], cats: list[int]) -> COCO:
    """One 100x100 image; `annotations`: [category id, x, y, w, h]."""
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
        "annotations": [{"id": i + 1, "image_id": 1, "category_id": int(a[0]), "bbox": list(a[1:]),
                         "area": a[3] * a[4], "iscrowd": 0} for i, a in enumerate(annotations)],
        "categories": [{"id": c, "name": {3: "b", 7: "a", 9: "unseen"}[c]} for c in cats],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _det(cat: int, box: list[float], score: float) -> dict:
    return {"image_id": 1, "category_id": cat, "bbox": box, "score": score}


# class a (id 7): four ground truths, a1..a4 along the top; class b (id 3): one at the bottom right
GT = [[7, 0, 0, 10, 10], [7, 20, 0, 10, 10], [7, 40, 0, 10, 10], [7, 60, 0, 10, 10], [3, 80, 80, 10, 10]]
DETS = [
    _det(7, [0, 0, 10, 10], 0.9),    # a1: TP
    _det(7, [0, 50, 10, 10], 0.8),   # nothing there: FP
    _det(7, [20, 0, 10, 10], 0.7),   # a2: TP
    _det(7, [40, 0, 10, 10], 0.6),   # a3: TP
    _det(7, [20, 50, 10, 10], 0.5),  # FP
    _det(3, [60, 0, 10, 10], 0.95),  # on a4 with the wrong class: FP for b, a4 missed by a
    _det(3, [80, 80, 10, 10], 0.55),  # b: TP
]


def test_f1_optimal_threshold_and_prf_by_hand() -> None:
    # macro F1 over (a, b) per threshold band: (0.9, 0.95] 0; (0.8, 0.9] 0.2; (0.7, 0.8] 1/6;
    # (0.6, 0.7] 2/7; (0.55, 0.6] 0.375; (0.5, 0.55] (0.75 + 2/3) / 2 = 0.7083; (0, 0.5] 2/3.
    # The best band (0.5, 0.55] is 0.501..0.550 on the 0.001 grid: its middle 0.5255.
    metrics = evaluate_detections(_coco(GT, [3, 7]), DETS)
    assert metrics["score_threshold"] == pytest.approx(0.5255)
    a, b = metrics["per_class_prf"]["a"], metrics["per_class_prf"]["b"]
    assert (a["P"], a["R"], a["F1"]) == pytest.approx((3 / 4, 3 / 4, 3 / 4))  # 3 TP of 4 kept, 3 of 4 found
    assert (b["P"], b["R"], b["F1"]) == pytest.approx((1 / 2, 1.0, 2 / 3))  # the 0.95 one is wrong
    assert metrics["P"] == pytest.approx(0.625)
    assert metrics["R"] == pytest.approx(0.875)
    assert metrics["F1"] == pytest.approx((0.75 + 2 / 3) / 2)


def test_prf_at_a_threshold_is_exact_not_coco_interpolated() -> None:
    coco = _coco(GT, [3, 7])
    evaluator = run_cocoeval(coco, DETS)
    curves = score_curves(evaluator, {3: "b", 7: "a"})
    at = curves.at(0.65)["a"]  # kept 0.9 TP, 0.8 FP, 0.7 TP: P 2/3, R 2/4
    assert (at["P"], at["R"], at["F1"]) == pytest.approx((2 / 3, 0.5, 4 / 7))
    diag = diagnose(coco, DETS, evaluator)
    pr = diag.pr["a"]  # COCO's envelope: the best precision at any recall >= r
    assert pr[0] == pytest.approx(1.0) and pr[25] == pytest.approx(1.0)
    assert pr[50] == pytest.approx(0.75)  # 0.75 at recall 0.5, where the kept detections have 2/3
    assert pr[75] == pytest.approx(0.75) and pr[76] == 0.0
    k = list(curves.thresholds).index(0.85)
    assert (curves.precision[0, k], curves.recall[0, k]) == pytest.approx((0.0, 0.0))  # b: only its FP
    assert (curves.precision[1, k], curves.recall[1, k]) == pytest.approx((1.0, 0.25))  # a: the 0.9


def test_confusion_matrix_by_hand() -> None:
    coco = _coco(GT, [3, 7, 9])
    diag = diagnose(coco, DETS)
    assert diag.labels == ["b", "a", "unseen", "background"]  # category-id order, then background
    # at 0.5255, class-agnostic matching in score order: b 0.95 takes a4, a 0.9 a1, a 0.8 nothing,
    # a 0.7 a2, a 0.6 a3, b 0.55 the b; a 0.5 is below the threshold
    expected = np.array([[1, 0, 0, 0], [1, 3, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(diag.confusion, expected)
    np.testing.assert_allclose(normalise_rows(diag.confusion)[1], [0.25, 0.75, 0, 0])
    np.testing.assert_allclose(normalise_rows(diag.confusion)[2], [0, 0, 0, 0])  # no ground truth: zeros
    # at 0.85 only b 0.95 (on a4) and a 0.9 (a1) are kept: a2, a3 and the b are missed
    high = confusion_matrix(coco, DETS, 0.85, [3, 7, 9])
    np.testing.assert_array_equal(high, [[0, 0, 0, 1], [1, 1, 0, 2], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_no_detections_give_zeros_and_every_miss_in_the_background_column() -> None:
    coco = _coco(GT, [3, 7])
    metrics = evaluate_detections(coco, [])
    assert (metrics["P"], metrics["R"], metrics["F1"]) == (0.0, 0.0, 0.0)
    assert metrics["per_class_prf"]["a"] == {"P": 0.0, "R": 0.0, "F1": 0.0}
    diag = diagnose(coco, [])
    np.testing.assert_array_equal(diag.confusion, [[0, 0, 1], [0, 0, 4], [0, 0, 0]])
