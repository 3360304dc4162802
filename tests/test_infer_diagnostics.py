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


def test_a_wrong_class_box_cannot_take_the_object_from_the_right_one() -> None:
    # one cat (class a); a dog box (class b) on it at 0.9, a cat box on it at 0.8
    coco = _coco([[7, 0, 0, 10, 10]], [3, 7])
    dets = [_det(3, [0, 0, 10, 10], 0.9), _det(7, [0, 0, 10, 10], 0.8)]
    metrics = evaluate_detections(coco, dets)
    assert metrics["per_class_prf"]["a"] == {"P": 1.0, "R": 1.0, "F1": 1.0}
    diag = diagnose(coco, dets)  # rows / columns: b, a, background
    np.testing.assert_array_equal(diag.confusion, [[0, 0, 0], [0, 1, 0], [1, 0, 0]])  # cat found; the dog box: bg
    # without the right-class box the dog box is the cat's confusion (true a, predicted b)
    np.testing.assert_array_equal(confusion_matrix(coco, dets, 0.85, [3, 7]), [[0, 0, 0], [1, 0, 0], [0, 0, 0]])


def test_crowd_regions_count_neither_way() -> None:
    coco = _coco([[7, 0, 0, 50, 50], [7, 80, 80, 10, 10]], [3, 7])
    coco.dataset["annotations"][0]["iscrowd"] = 1
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    dets = [_det(7, [5, 5, 20, 20], 0.9),  # a cat box in the cat crowd: ignored, as COCOeval does
            _det(3, [5, 5, 20, 20], 0.8),  # a dog box there: a background false positive
            _det(7, [80, 80, 10, 10], 0.7)]  # the one cat object
    np.testing.assert_array_equal(confusion_matrix(coco, dets, 0.5, [3, 7]), [[0, 0, 0], [0, 1, 0], [1, 0, 0]])


def _scene(seed: int) -> tuple[COCO, list[dict]]:
    """8 images of 0-5 objects of 3 classes, 0-3 boxes near each (30% with a random class), 0-3
    random boxes per image; uniform scores."""
    rng = np.random.default_rng(seed)
    anns, dets = [], []
    for image in range(1, 9):
        for _ in range(int(rng.integers(0, 6))):
            cat, box = int(rng.choice([3, 7, 9])), [*rng.uniform(0, 150, 2), *rng.uniform(10, 50, 2)]
            anns.append({"id": len(anns) + 1, "image_id": image, "category_id": cat, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
            for _ in range(int(rng.integers(0, 4))):
                shift = rng.uniform(-0.4, 0.4, 2) * box[2:]
                predicted = cat if rng.random() < 0.7 else int(rng.choice([3, 7, 9]))
                dets.append({"image_id": image, "category_id": predicted, "score": float(rng.random()),
                             "bbox": [box[0] + shift[0], box[1] + shift[1], box[2], box[3]]})
        for _ in range(int(rng.integers(0, 4))):
            dets.append({"image_id": image, "category_id": int(rng.choice([3, 7, 9])),
                         "bbox": [*rng.uniform(0, 150, 2), *rng.uniform(10, 50, 2)], "score": float(rng.random())})
    coco = COCO()
    coco.dataset = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 200} for i in range(1, 9)],
                    "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in (3, 7, 9)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, dets


def test_matrix_agrees_with_per_class_prf_at_every_threshold() -> None:
    off_diagonal = 0
    for seed in range(4):
        off_diagonal += _check_scene(*_scene(seed))
    assert off_diagonal > 0  # the scenes do confuse classes


def _check_scene(coco: COCO, dets: list[dict]) -> int:
    """Rows sum to the objects, columns to the detections, the diagonal to the per-class TP (so
    P and R read off the matrix are the per-class P and R), at four thresholds; returns how many
    off-diagonal counts it saw."""
    evaluator = run_cocoeval(coco, dets)
    names = {c: str(c) for c in sorted({a["category_id"] for a in coco.dataset["annotations"]})}
    curves = score_curves(evaluator, names)
    cat_ids = [3, 7, 9]
    objects = np.bincount([cat_ids.index(a["category_id"]) for a in coco.dataset["annotations"]], minlength=3)
    off_diagonal = 0
    for threshold in (0.0, 0.2, 0.5, 0.8):
        matrix = confusion_matrix(coco, dets, threshold, cat_ids)
        np.testing.assert_array_equal(matrix, confusion_matrix(coco, dets, threshold, cat_ids, evaluator))  # reused
        kept = np.bincount([cat_ids.index(d["category_id"]) for d in dets if d["score"] >= threshold], minlength=3)
        np.testing.assert_array_equal(matrix[:3].sum(axis=1), objects)  # each row: that class's objects
        np.testing.assert_array_equal(matrix[:, :3].sum(axis=0), kept)  # each column: its detections
        assert matrix[3, 3] == 0
        at = curves.at(threshold)
        for k, cat in enumerate(cat_ids):
            scores, tp, _ = curves._matches[str(cat)] if str(cat) in at else (np.zeros(0), np.zeros(0), 0)
            assert matrix[k, k] == int(tp[scores >= threshold].sum())  # the diagonal: per-class TP
            if str(cat) in at:  # P and R read off the matrix are the per-class P and R
                assert at[str(cat)]["R"] == pytest.approx(matrix[k, k] / matrix[k].sum())
                assert at[str(cat)]["P"] == pytest.approx(matrix[k, k] / max(1, matrix[:, k].sum()))
        off_diagonal += int(matrix[:3, :3].sum() - np.trace(matrix[:3, :3]))
    return off_diagonal
