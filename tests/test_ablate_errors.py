"""The per-class / per-size / error-type breakdown and the gallery's choices, against hand-made values
(the TIDE error types themselves: tests/test_ablate_error_types.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dinokit.ablate.breakdown import analysis_values, breakdown, breakdown_table


def test_breakdown_pairs_by_seed_and_shows_undefined_sizes() -> None:
    trials = pd.DataFrame({"trial": [0, 1, 2, 3, 4, 5], "arm": ["a", "b"] * 3, "seed": [1, 1, 2, 2, 3, 3]})
    analyses = {}
    for t, arm, seed in trials.itertuples(index=False):
        up = {"a": 0.0, "b": 0.1}[arm] + 0.01 * seed  # b: +10 points on circle, every seed
        analyses[t] = {"per_class": {"circle": 0.5 + up, "ring": 0.3 + (0.02 * seed if arm == "b" else 0.0)},
                       "APs": None, "APm": 0.4, "APl": 0.4 + up,
                       "errors": {"dAP_dupl": 10.0 - (3.0 if arm == "b" else 0.0), "dAP_missed": 5.0}}
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
    assert errors["dAP_dupl"].startswith("−3.0") and errors["dAP_missed"].startswith("+0.0")


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
