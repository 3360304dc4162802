"""TIDE's error types against hand-made cases built from the paper's definitions (Bolya et al. 2020,
section 2): one per type, the interactions (a `both` error does not cover its object, crowd regions,
duplicates, the first detection on an object), the closed IoU intervals, no score threshold but a
cap of 100 detections, and the dAP of fixing each type computed by hand. The same rules against
the authors' tidecv package: tests/test_ablate_error_types_tidecv.py."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dinokit.ablate.breakdown import ERRORS, analysis_values
from dinokit.ablate.error_types import DAP, TYPES, classify_image, judge_image, tide_errors

CAT, DOG = 1, 2
HALF = 100 * 51 / 101  # AP of finding 1 of 2 objects first: precision 1 at recalls 0 .. 0.50, then 0


def _gt(box: list[float], cat: int = CAT, crowd: int = 0) -> dict:
    return {"image_id": 1, "bbox": box, "category_id": cat, "iscrowd": crowd}


def _det(box: list[float], cat: int = CAT, score: float = 0.9) -> dict:
    return {"image_id": 1, "bbox": box, "category_id": cat, "score": score}


def _one_image(gts: list[dict]) -> dict:
    return {"images": [{"id": 1}], "annotations": gts}


def _counts(gts: list[dict], dets: list[dict], **kw: int) -> dict[str, int]:
    c = classify_image(gts, dets, **kw)
    return {k: v for k, v in c.items() if v and k not in ("gt", "dets")}


def test_each_error_type_in_one_image() -> None:
    gts = [_gt([0, 0, 10, 10]), _gt([50, 50, 10, 10], DOG), _gt([100, 0, 10, 10]), _gt([0, 100, 10, 10]),
           _gt([200, 0, 10, 10])]
    dets = [
        _det([0, 0, 10, 10], CAT, 0.95),  # tp on object 0
        _det([0, 0, 10, 11], CAT, 0.90),  # object 0 again (IoU 0.91): dupl
        _det([50, 50, 10, 10], CAT, 0.85),  # the dog's box called a cat: cls, covers the dog
        _det([104, 0, 10, 10], CAT, 0.80),  # IoU 60/140 = 0.43 with a cat: loc, covers it
        _det([5, 100, 10, 10], DOG, 0.75),  # IoU 1/3 with a cat, called a dog: both, does NOT cover it
        _det([300, 300, 10, 10], CAT, 0.70),  # nothing there: bkg
    ]
    assert _counts(gts, dets) == {"tp": 1, "dupl": 1, "cls": 1, "loc": 1, "both": 1, "bkg": 1, "missed": 2}
    judged = judge_image(gts, dets)
    assert judged.kind == ["tp", "dupl", "cls", "loc", "both", "bkg"]
    assert judged.missed == [False, False, False, True, True]  # the both error's cat, and the untouched one


def test_a_both_error_leaves_its_object_to_later_boxes_and_missed() -> None:
    cat = [_gt([0, 0, 10, 10])]
    assert _counts(cat, [_det([5, 0, 10, 10], DOG)]) == {"both": 1, "missed": 1}  # TIDE: the both GT is missed
    assert _counts(cat, [_det([5, 0, 10, 10], CAT)]) == {"loc": 1}  # a loc error covers its object
    assert _counts(cat, [_det([0, 0, 10, 10], DOG)]) == {"cls": 1}  # so does a cls error
    # a later, lower-scored correct box still takes the object: a true positive, nothing missed
    assert _counts(cat, [_det([5, 0, 10, 10], DOG, 0.9), _det([0, 0, 10, 10], CAT, 0.2)]) == {"both": 1, "tp": 1}


def test_duplicates_and_the_best_free_object() -> None:
    two = [_gt([0, 0, 10, 10]), _gt([2, 0, 10, 10])]  # two cats overlapping at IoU 0.67
    assert _counts(two, [_det([0, 0, 10, 10], score=0.9), _det([2, 0, 10, 10], score=0.8)]) == {"tp": 2}
    one = [_gt([0, 0, 10, 10])]
    dets = [_det([0, 0, 10, 10], score=0.5), _det([1, 0, 10, 10], score=0.9), _det([0, 1, 10, 10], score=0.7)]
    judged = judge_image(one, dets)  # score order: the 0.9 box takes the cat, whatever its IoU
    assert judged.det_score == [0.9, 0.7, 0.5] and judged.kind == ["tp", "dupl", "dupl"]
    # a dog box on a cat already found is a cls error on a taken object: counted, but it covers nothing
    assert _counts(one, [_det([0, 0, 10, 10], CAT, 0.9), _det([0, 0, 10, 10], DOG, 0.8)]) == {"tp": 1, "cls": 1}


def test_detections_on_a_crowd_region_of_their_class_are_ignored() -> None:
    gts = [_gt([0, 0, 100, 100], CAT, crowd=1), _gt([200, 200, 20, 20])]
    dets = [
        _det([10, 10, 20, 20], CAT, 0.9),  # inside the cat crowd: ignored, not a background error
        _det([10, 10, 20, 20], DOG, 0.8),  # a dog there: the region is the cats': bkg
        _det([200, 200, 20, 20], CAT, 0.7),  # the one cat object: tp
        _det([40, 40, 80, 80], CAT, 0.6),  # 60 x 60 of its 80 x 80 inside (0.56 > 0.5): ignored
        _det([80, 80, 40, 40], CAT, 0.5),  # 20 x 20 of 40 x 40 inside (0.25): bkg
    ]
    assert judge_image(gts, dets).kind == ["ignored", "bkg", "tp", "ignored", "bkg"]
    assert classify_image(gts, dets)["gt"] == 1  # the crowd region is no object
    # an object inside a crowd: the first box takes the object, a second one is ignored (as COCOeval)
    inside = [_gt([0, 0, 100, 100], CAT, crowd=1), _gt([10, 10, 20, 20])]
    assert judge_image(inside, [_det([10, 10, 20, 20], score=0.9), _det([10, 10, 20, 20], score=0.8)]).kind == [
        "tp", "ignored"]
    # ignored boxes are out of the AP as well: a perfect detector plus boxes on the crowd keeps AP 100
    out = tide_errors(_one_image(gts), [dets[0], dets[2], dets[3]])
    assert out["AP50"] == pytest.approx(100.0) and out["dets"] == 1 and out["ignored"] == 2
    assert all(out[k] == 0 for k in DAP)


def test_closed_iou_intervals_as_tide_tests_them() -> None:
    cat = [_gt([0, 0, 10, 10])]
    assert _counts(cat, [_det([0, 0, 10, 1], CAT)]) == {"loc": 1}  # IoU exactly 0.1 = BG: loc (BG <= IoU)
    assert _counts(cat, [_det([0, 0, 10, 1], DOG)]) == {"bkg": 1, "missed": 1}  # and for another class bkg (IoU <= BG)
    assert _counts(cat, [_det([0, 0, 10, 5], CAT)]) == {"tp": 1}  # IoU exactly 0.5 = FG: a true positive
    # IoU exactly FG with a taken object is tested as loc first (BG <= IoU <= FG), not dupl
    assert _counts(cat, [_det([0, 0, 10, 10], score=0.9), _det([0, 0, 10, 5], score=0.8)]) == {"tp": 1, "loc": 1}


def test_every_detection_up_to_the_cap_and_no_score_threshold() -> None:
    cat = [_gt([0, 0, 10, 10])]
    assert _counts(cat, [_det([0, 0, 10, 10], score=0.01)]) == {"tp": 1}  # a low score is still found
    noise = [_det([500 + 20 * i, 500, 10, 10], DOG, 0.5 + i / 1000) for i in range(100)]
    late = _det([0, 0, 10, 10], CAT, 0.01)  # the 101st by score
    assert _counts(cat, [*noise, late]) == {"bkg": 100, "missed": 1}
    assert _counts(cat, [*noise, late], max_dets=101) == {"bkg": 100, "tp": 1}


def test_dap_of_a_loc_error_by_hand() -> None:
    gts = _one_image([_gt([0, 0, 10, 10]), _gt([50, 0, 10, 10])])
    out = tide_errors(gts, [_det([0, 0, 10, 10], score=0.9), _det([54, 0, 10, 10], score=0.8)])  # tp, loc
    assert out["AP50"] == pytest.approx(HALF)
    assert out["dAP_loc"] == pytest.approx(100 - HALF)  # fixed: two true positives
    assert out["dAP_missed"] == 0  # the second cat is covered by its loc error: not missed
    assert (out["n_loc"], out["n_missed"], out["tp"], out["gt"], out["dets"]) == (1, 0, 1, 2, 2)


def test_dap_of_a_both_error_by_hand() -> None:
    gts = _one_image([_gt([0, 0, 10, 10]), _gt([50, 0, 10, 10])])
    out = tide_errors(gts, [_det([0, 0, 10, 10], score=0.9), _det([54, 0, 10, 10], DOG, 0.8)])  # tp, both
    # classes: cat (AP HALF) and dog (no object, one false positive: AP 0, counted as TIDE does)
    assert out["AP50"] == pytest.approx(HALF / 2)
    assert out["dAP_both"] == pytest.approx(HALF / 2)  # removed: the dog class is empty, cat alone
    assert out["dAP_missed"] == pytest.approx(50 - HALF / 2)  # the uncovered cat leaves the truth: cat 100, dog 0
    assert out["dAP_loc"] == out["dAP_cls"] == out["dAP_bkg"] == out["dAP_dupl"] == 0


def test_dap_of_a_cls_error_moves_it_to_the_objects_class() -> None:
    gts = _one_image([_gt([0, 0, 10, 10]), _gt([50, 0, 10, 10])])
    out = tide_errors(gts, [_det([0, 0, 10, 10], score=0.9), _det([50, 0, 10, 10], DOG, 0.8)])  # tp, cls
    assert out["AP50"] == pytest.approx(HALF / 2)
    assert out["dAP_cls"] == pytest.approx(100 - HALF / 2)  # a cat true positive; the dog class is gone


def test_only_the_first_error_on_an_object_is_fixed() -> None:
    gts = _one_image([_gt([0, 0, 10, 10])])
    dets = [_det([5, 0, 10, 10], CAT, 0.9), _det([0, 0, 10, 10], DOG, 0.8)]  # loc then cls, on one cat
    out = tide_errors(gts, dets)
    assert (out["n_loc"], out["n_cls"], out["n_missed"], out["AP50"]) == (1, 1, 0, 0)
    assert out["dAP_loc"] == pytest.approx(50.0)  # the loc box becomes the cat (100); the dog stays (0)
    # fixing cls only: the cat is the loc error's (it scored higher), so the dog box is removed, not
    # made a cat; the cat keeps its unfixed loc error: cat AP 0, and the dog class is gone
    assert out["dAP_cls"] == 0


def test_no_detections_and_an_image_without_objects() -> None:
    gts = {"images": [{"id": 1}, {"id": 2}], "annotations": [_gt([0, 0, 10, 10])]}
    out = tide_errors(gts, [])
    assert (out["AP50"], out["n_missed"], out["dAP_cls"]) == (0, 1, 0)
    assert math.isnan(out["dAP_missed"])  # fixing it leaves no object and no detection: no AP to speak of
    out = tide_errors(gts, [_det([0, 0, 10, 10]), {**_det([0, 0, 10, 10], score=0.5), "image_id": 2}])
    assert (out["tp"], out["n_bkg"], out["AP50"]) == (1, 1, pytest.approx(100.0))  # an image of none: bkg
    assert out["dAP_bkg"] == 0  # after the true positive: it costs nothing


def test_the_report_reads_dap_and_a_study_analysed_before_shows_na() -> None:
    assert ERRORS == DAP == tuple(f"dAP_{t}" for t in TYPES)
    trials = pd.DataFrame({"trial": [0, 1], "arm": ["a", "b"], "seed": [1, 1]})
    old = {"per_class": {}, "errors": {"cls": 3.0, "dupl": 9.0, "dupl_rate": 4.0}}  # counts per 100 objects
    new = {"per_class": {}, "errors": tide_errors(_one_image([_gt([0, 0, 10, 10])]), [_det([0, 0, 10, 10])])}
    values = analysis_values(trials, {0: old, 1: new}).query("kind == 'error'")
    assert list(values["key"].unique()) == list(DAP)  # no count is read as a dAP
    assert values[values["arm"] == "a"]["value"].map(math.isnan).all()
    assert (values[values["arm"] == "b"]["value"] == 0).all()
