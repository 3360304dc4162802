"""dinokit's TIDE against the authors' own `tidecv` (1.0.1, in the test extra) on the same random
scenes: the AP50, the count of every error type and the dAP of fixing each, to 1e-9.

Where the two differ on purpose: tidecv leaves a detection on a crowd (ignore) region out of the AP
but still files it under an error type (usually bkg), and when such a detection also overlaps an
object it covers that object and fixing it makes it a true positive. dinokit ignores it entirely,
as COCOeval does (the ignored box is no error and covers nothing); the crowd scenes here compare
the counts with tidecv's errors on ignored detections taken out, and the last test pins the case
where an ignored box overlaps an object.

Skips without tidecv, with the reason; with DINOKIT_REQUIRE_EXTRAS=1 (set by .ci/run) it fails instead
(tests/services.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dinokit.ablate.error_types import TYPES, tide_errors
from tests.services import extra

SHORT = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupl": "Dupe", "bkg": "Bkg", "missed": "Miss"}


@pytest.fixture(autouse=True)
def _own_matplotlib_style() -> Any:
    """tidecv.TIDE() restyles matplotlib for the whole process (seaborn's whitegrid, its palette
    and its colour codes: "k" becomes a dark grey): put every rcParam and colour code back, or
    later tests' plots change colour."""
    import matplotlib
    from matplotlib import colors

    named = colors.get_named_colors_mapping()
    codes = dict(named)
    with matplotlib.rc_context():
        yield
    named.clear()
    named.update(codes)
    colors.colorConverter.cache.clear()


def _tidecv() -> Any:
    return extra("tidecv")  # in the test extra


def _scene(seed: int, crowd: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """24 images of 0-5 objects of 3 classes; per object 0-3 boxes near it (shifted by 0.2-2x a
    random fraction, 30% with a random class), 0-4 random boxes per image, crowd regions of 3 boxes
    apart from the objects in half the images when `crowd`, and every third seed 130 more boxes on
    image 1 (past the cap of 100). Scores uniform: no ties."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []

    def det(image: int, cat: int, box: list[float]) -> None:
        dets.append({"image_id": image, "category_id": cat, "bbox": [float(v) for v in box],
                     "score": float(rng.random())})

    def noise(image: int) -> None:
        det(image, int(rng.integers(1, 4)), [*rng.uniform(0, 250, 2), *rng.uniform(5, 50, 2)])

    for image in range(1, 25):
        images.append({"id": image})
        for _ in range(int(rng.integers(0, 6))):
            x, y, w, h = *rng.uniform(0, 200, 2), *rng.uniform(10, 60, 2)
            cat = int(rng.integers(1, 4))
            anns.append({"id": len(anns) + 1, "image_id": image, "category_id": cat, "bbox": [x, y, w, h],
                         "iscrowd": 0})
            for _ in range(int(rng.integers(0, 4))):
                s = rng.uniform(0, 0.6, 4) * [w, h, w, h] * rng.choice([0.2, 1.0, 2.0])
                det(image, cat if rng.random() < 0.7 else int(rng.integers(1, 4)),
                    [x + s[0] - s[2] / 2, y + s[1] - s[3] / 2, w, h])
        if crowd and rng.random() < 0.5:
            region = int(rng.integers(1, 4))
            anns.append({"id": len(anns) + 1, "image_id": image, "category_id": region, "bbox": [400, 400, 80, 80],
                         "iscrowd": 1})
            for _ in range(3):
                det(image, region if rng.random() < 0.7 else 1, [*(405 + rng.uniform(0, 30, 2)), 30, 30])
        for _ in range(int(rng.integers(0, 5))):
            noise(image)
    if seed % 3 == 0:
        for _ in range(130):
            noise(1)
    return {"images": images, "annotations": anns}, dets


def _run_tidecv(tidecv: Any, gt: dict[str, Any], dets: list[dict[str, Any]]) -> tuple[float, dict, dict, dict]:
    """tidecv's AP50, error counts, dAP per type, and its errors on ignored detections, by short name."""
    truth, pred = tidecv.Data("gt"), tidecv.Data("pred")
    for im in gt["images"]:
        truth.add_image(im["id"], str(im["id"]))
    for a in gt["annotations"]:
        add = truth.add_ignore_region if a["iscrowd"] else truth.add_ground_truth
        add(a["image_id"], a["category_id"], box=a["bbox"])
    for d in dets:
        pred.add_detection(d["image_id"], d["category_id"], d["score"], box=d["bbox"])
    tide = tidecv.TIDE()
    run = tide.evaluate(truth, pred, mode=tidecv.TIDE.BOX)
    counts = {e.short_name: n for e, n in run.count_errors().items()}
    on_ignored: dict[str, int] = {}
    for error in run.errors:
        if getattr(error, "pred", {}).get("used", False) is None:  # tidecv marks an ignored detection None
            on_ignored[error.short_name] = on_ignored.get(error.short_name, 0) + 1
    return run.ap, counts, tide.get_main_errors()["pred"], on_ignored


@pytest.mark.parametrize("crowd", [False, True])
def test_same_ap_counts_and_dap_as_tidecv(crowd: bool) -> None:
    tidecv = _tidecv()
    seen = {t: 0.0 for t in TYPES}
    for seed in range(12):
        gt, dets = _scene(seed, crowd)
        ours = tide_errors(gt, dets)
        ap, counts, dap, on_ignored = _run_tidecv(tidecv, gt, dets)
        assert ours["AP50"] == pytest.approx(ap, abs=1e-9), seed
        assert {t: ours[f"n_{t}"] for t in TYPES} == {t: counts[SHORT[t]] - on_ignored.get(SHORT[t], 0) for t in TYPES}
        assert {t: ours[f"dAP_{t}"] for t in TYPES} == pytest.approx({t: dap[SHORT[t]] for t in TYPES}, abs=1e-9)
        assert ours["ignored"] == sum(on_ignored.values())  # tidecv files every ignored box under some type
        for t in TYPES:
            seen[t] += ours[f"dAP_{t}"]
    assert all(v > 0 for v in seen.values()), seen  # the scenes exercise every type
    if crowd:
        assert sum(on_ignored.values()) > 0


def test_where_an_ignored_box_overlaps_an_object_tidecv_differs() -> None:
    tidecv = _tidecv()
    gt = {"images": [{"id": 1}], "annotations": [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "iscrowd": 1},  # a crowd of cats around it
        {"image_id": 1, "category_id": 2, "bbox": [100, 100, 10, 10], "iscrowd": 0}]}
    # the first box lies in the crowd and has IoU 0.32 with the cat object
    dets = [{"image_id": 1, "category_id": 1, "bbox": [3, 3, 10, 10], "score": 0.9},
            {"image_id": 1, "category_id": 2, "bbox": [100, 100, 10, 10], "score": 0.8}]
    ap, counts, dap, on_ignored = _run_tidecv(tidecv, gt, dets)
    ours = tide_errors(gt, dets)
    assert ap == ours["AP50"] == pytest.approx(50.0)  # the AP agrees: the box is ignored by both
    assert (counts["Loc"], on_ignored, dap["Loc"], counts["Miss"]) == (1, {"Loc": 1}, pytest.approx(50.0), 0)
    assert (ours["n_loc"], ours["ignored"], ours["dAP_loc"]) == (0, 1, 0)  # dinokit: no error, covers nothing
    assert (ours["n_missed"], ours["dAP_missed"]) == (1, pytest.approx(50.0))  # so the cat is missed
