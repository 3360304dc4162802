"""TIDE-style error types and the per-class / per-size breakdown, against hand-made detections."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dinokit.ablate.breakdown import analysis_values, breakdown, breakdown_table
from dinokit.ablate.errors import classify_image, error_counts


def _gt(box: list[float], cat: int = 1) -> dict:
    return {"bbox": box, "category_id": cat}


def _det(box: list[float], cat: int = 1, score: float = 0.9) -> dict:
    return {"bbox": box, "category_id": cat, "score": score}


def test_each_error_type_from_one_hand_made_case() -> None:
    gts = [_gt([0, 0, 10, 10], 1), _gt([50, 50, 10, 10], 2), _gt([100, 0, 10, 10], 1), _gt([0, 100, 10, 10], 1)]
    dets = [
        _det([0, 0, 10, 10], 1, 0.95),  # tp on gt 0
        _det([0, 0, 10, 11], 1, 0.90),  # same object again: dupl (IoU 0.91 with matched gt 0)
        _det([50, 50, 10, 10], 1, 0.85),  # right box, wrong class: cls (gt 1 is class 2)
        _det([104, 0, 10, 10], 1, 0.80),  # IoU 6/14 = 0.43 with gt 2, same class: loc
        _det([200, 200, 10, 10], 1, 0.70),  # nothing there: bkg
    ]
    counts = classify_image(gts, dets)
    assert {k: counts.get(k, 0) for k in ("tp", "dupl", "cls", "loc", "bkg", "both", "missed")} == {
        "tp": 1, "dupl": 1, "cls": 1, "loc": 1, "bkg": 1, "both": 0,
        "missed": 1,  # gt 3 (nothing near it); gts 1 and 2 are covered by the cls and loc errors
    }


def test_both_error_and_the_tp_takes_the_best_free_match() -> None:
    gts = [_gt([0, 0, 10, 10], 2)]
    counts = classify_image(gts, [_det([5, 0, 10, 10], 1)])  # IoU 1/3 with a gt of another class
    assert counts["both"] == 1 and counts.get("missed", 0) == 0
    # two overlapping gts of one class: two detections, each finds its own
    gts = [_gt([0, 0, 10, 10]), _gt([2, 0, 10, 10])]
    counts = classify_image(gts, [_det([0, 0, 10, 10], score=0.9), _det([2, 0, 10, 10], score=0.8)])
    assert counts["tp"] == 2 and counts.get("dupl", 0) == 0


def test_counts_per_100_objects_and_the_score_threshold() -> None:
    gt = {"images": [{"id": 1}, {"id": 2}],
          "annotations": [{"image_id": 1, **_gt([0, 0, 10, 10])}, {"image_id": 2, **_gt([0, 0, 10, 10])},
                          {"image_id": 2, **_gt([30, 30, 10, 10])}, {"image_id": 2, **_gt([60, 60, 10, 10])}]}
    dets = [{"image_id": 1, **_det([0, 0, 10, 10])}, {"image_id": 1, **_det([0, 0, 10, 10], score=0.5)},
            {"image_id": 2, **_det([0, 0, 10, 10])}, {"image_id": 2, **_det([30, 30, 10, 10], score=0.1)}]
    out = error_counts(gt, dets)
    assert out["gt"] == 4 and out["dets"] == 3 and out["tp"] == 2  # the 0.1 detection is below 0.3
    assert out["dupl"] == pytest.approx(25.0) and out["missed"] == pytest.approx(50.0)
    assert out["dupl_rate"] == pytest.approx(100 / 3)


def test_breakdown_pairs_by_seed_and_shows_undefined_sizes() -> None:
    trials = pd.DataFrame({"trial": [0, 1, 2, 3, 4, 5], "arm": ["a", "b"] * 3, "seed": [1, 1, 2, 2, 3, 3]})
    analyses = {}
    for t, arm, seed in trials.itertuples(index=False):
        up = {"a": 0.0, "b": 0.1}[arm] + 0.01 * seed  # b: +10 points on circle, every seed
        analyses[t] = {"per_class": {"circle": 0.5 + up, "ring": 0.3 + (0.02 * seed if arm == "b" else 0.0)},
                       "APs": None, "APm": 0.4, "APl": 0.4 + up,
                       "errors": {"dupl": 10.0 - (3.0 if arm == "b" else 0.0), "missed": 5.0}}
    diffs = breakdown(analysis_values(trials, analyses), [("b vs a", "b", "a")])
    row = diffs[(diffs["key"] == "circle")].iloc[0]
    assert row["mean"] == pytest.approx(0.1) and row["n"] == 3 and row["low"] == pytest.approx(0.1)
    ring = diffs[diffs["key"] == "ring"].iloc[0]
    assert ring["mean"] == pytest.approx(0.04) and ring["low"] < 0.04 < ring["high"]
    assert math.isnan(diffs[diffs["key"] == "APs"].iloc[0]["mean"])
    table = breakdown_table(diffs, ("class", "size"))
    cells = dict(zip(table["class / size / error"], table["b vs a"]))
    assert cells["circle"].startswith("+10.0 [") and cells["circle"].endswith("]")
    assert cells["APs"] == "n/a" and "*" not in "".join(cells.values())  # exploratory: no significance marks
    errors = dict(zip(*breakdown_table(diffs, ("error",)).values.T))
    assert errors["dupl"].startswith("−3.0")


def test_gallery_picks_the_busiest_images_and_a_seed_every_arm_finished(tmp_path) -> None:
    from dinokit.ablate.gallery import busiest_images, gallery_seed

    gt = {"images": [{"id": i} for i in range(1, 6)],
          "annotations": [{"image_id": i} for i in (3, 3, 3, 5, 5, 1, 2, 2, 4, 4)] + [{"image_id": 1, "iscrowd": 1}]}
    assert busiest_images(gt, 3) == [3, 2, 4]  # 3 objects, then 2 each (ties: lower id); crowds not counted
    for arm, seed in (("a", 1), ("b", 2), ("a", 2)):
        (tmp_path / f"{arm}{seed}").mkdir()
        (tmp_path / f"{arm}{seed}" / "best.pt").write_bytes(b"x")
    done = pd.DataFrame({"arm": ["a", "a", "b", "b"], "seed": [1, 2, 1, 2],
                         "run_dir": [str(tmp_path / "a1"), str(tmp_path / "a2"), str(tmp_path / "gone"),
                                     str(tmp_path / "b2")]})
    assert gallery_seed(done, ["a", "b"]) == 2  # seed 1's b checkpoint is gone
    assert gallery_seed(done.iloc[:1], ["a", "b"]) is None
