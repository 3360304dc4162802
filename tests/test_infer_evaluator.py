"""COCOeval wrapper on hand-made ground truth and detections."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pandas as pd
import pytest
from pycocotools.coco import COCO
from rich.console import Console

from dinokit.files import write_json
from dinokit.infer.evaluator import METRIC_NAMES, evaluate_detections
from dinokit.infer.tables import metrics_line, metrics_table, per_class_table
from dinokit.training.plots import write_metrics_csv


def make_gt() -> COCO:
    images = [{"id": i, "width": 200, "height": 160, "file_name": f"{i}.png"} for i in (1, 2, 3)]
    boxes = {  # image -> [(category, x, y, w, h)], medium and large objects
        1: [(1, 10, 10, 50, 40), (2, 100, 60, 80, 90)],
        2: [(1, 30, 20, 60, 60)],
        3: [(2, 5, 5, 120, 100), (1, 140, 100, 40, 45)],
    }
    anns = []
    for image_id, objs in boxes.items():
        for cat, x, y, w, h in objs:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def detections_from_gt(coco: COCO, shift: float = 0.0, score: float = 0.9) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"],
         "bbox": [a["bbox"][0] + shift, a["bbox"][1] + shift, a["bbox"][2], a["bbox"][3]], "score": score}
        for a in coco.dataset["annotations"]
    ]


def test_perfect_detections_score_one(capsys):
    coco = make_gt()
    metrics = evaluate_detections(coco, detections_from_gt(coco))
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AR100"] == pytest.approx(1.0)
    assert metrics["per_class"] == {"circle": pytest.approx(1.0), "square": pytest.approx(1.0)}
    assert capsys.readouterr().out == ""  # COCOeval's prints are silenced


def test_shifted_detections_score_lower():
    coco = make_gt()
    perfect = evaluate_detections(coco, detections_from_gt(coco))
    shifted = evaluate_detections(coco, detections_from_gt(coco, shift=8.0))
    assert 0.0 < shifted["AP"] < perfect["AP"]
    assert shifted["AP75"] <= shifted["AP50"]


def test_wrong_class_hurts_only_that_class():
    coco = make_gt()
    dets = detections_from_gt(coco)
    for d in dets:
        if d["category_id"] == 2:
            d["category_id"] = 1
    metrics = evaluate_detections(coco, dets)
    assert metrics["per_class"]["square"] == 0.0
    assert 0.0 < metrics["per_class"]["circle"] < 1.0  # false positives now compete


def test_empty_detections_give_zero_without_crash():
    metrics = evaluate_detections(make_gt(), [])
    assert all(metrics[name] == 0.0 for name in METRIC_NAMES if name != "APs")
    assert math.isnan(metrics["APs"])  # no small object: undefined, as with detections
    assert set(metrics["per_class"]) == {"circle", "square"}


def test_undefined_metrics_are_nan_and_shown_as_na(tmp_path):
    coco = make_gt()  # no small objects: COCO's -1 for APs must not leak out as a number
    metrics = evaluate_detections(coco, detections_from_gt(coco, shift=3.0))
    for name in METRIC_NAMES:
        assert isinstance(metrics[name], float) and (name == "APs" or 0.0 <= metrics[name] <= 1.0)
    assert math.isnan(metrics["APs"])
    assert metrics_line(metrics).split()[7] == "n/a"  # "AP x AP50 x AP75 x APs n/a ..."
    assert "n/a" in _render(metrics_table(metrics)) and "n/a" not in _render(per_class_table(metrics))
    write_metrics_csv([{"step": 1, **metrics}], tmp_path / "m.csv")
    assert pd.read_csv(tmp_path / "m.csv")["APs"].isna().all()  # an empty cell, not 0.0
    assert "APs,APm" in (tmp_path / "m.csv").read_text() and ",," in (tmp_path / "m.csv").read_text()
    write_json(tmp_path / "m.json", metrics)
    assert json.loads((tmp_path / "m.json").read_text())["APs"] is None


def _render(table) -> str:
    console = Console(file=io.StringIO(), width=200)
    console.print(table)
    return console.file.getvalue()


def test_one_evaluation_path_and_training_compiles_outside_infer():
    """Benchmarks evaluate through `dinokit.load(...).evaluate()` (the int8 device rule included);
    the trainer's torch.compile comes from training/compiled.py, not from inference's speed options."""
    import ast
    from pathlib import Path

    from dinokit.infer import evaluator

    root = Path(__file__).resolve().parents[1]
    assert not hasattr(evaluator, "evaluate_checkpoint")
    assert not [p.name for p in (root / "benchmarks").glob("*.py") if "evaluate_checkpoint" in p.read_text()]
    def imported(*parts: str) -> set[str]:
        tree = ast.parse((root / "dinokit" / Path(*parts)).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}

    assert "dinokit.infer.speed" not in imported("training", "trainer.py")
    assert "dinokit.training.compiled" in imported("training", "trainer.py")
    assert "dinokit.infer.speed" not in imported("training", "compiled.py")
