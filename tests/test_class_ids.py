"""Class ids that cannot silently go wrong: non-contiguous COCO category ids starting at 0, a
category without annotations, annotation id 0, and annotations of a category that is not listed.
Each either maps back to the dataset's own ids and names end to end (train, eval, predict JSON,
to_coco, ONNX metadata) or is one clear error."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO

import dinokit
from dinokit.data.shapes import write_shapes
from dinokit.infer.evaluator import evaluate_detections
from tests.cli_helpers import run_cli
from tests.services import extra
from tests.train_helpers import MICRO_MODEL, isolated_cache

# shapes' ids 1..6 -> 0, 3, 4, 9, 10, 11 and an extra category 20 ("unused") without annotations
NEW_IDS = {1: 0, 2: 3, 3: 4, 4: 9, 5: 10, 6: 11}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    yield from isolated_cache(tmp_path_factory, "class_ids")


@pytest.fixture(scope="module")
def dataset(workdir) -> Path:
    root = write_shapes(workdir / "ids", 6, 3, 64, 0)
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}.json"
        data = json.loads(path.read_text())
        for cat in data["categories"]:
            cat["id"] = NEW_IDS[cat["id"]]
        data["categories"].append({"id": 20, "name": "unused"})
        for k, ann in enumerate(data["annotations"]):
            ann["category_id"], ann["id"] = NEW_IDS[ann["category_id"]], k  # annotation ids from 0 too
        path.write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def run(dataset, workdir):
    sets = [*MICRO_MODEL, "data.image_size=64", "data.min_size=64", "train.time_budget=0", "train.tensorboard=false"]
    return dinokit.train(str(dataset), "tiny", steps=1, batch_size=3, out=str(workdir / "runs"), name="ids",
                         overrides=sets)


def test_ids_map_back_end_to_end(run, dataset, workdir, capsys):
    data = json.loads((dataset / "annotations" / "instances_val.json").read_text())
    name_of = {c["id"]: c["name"] for c in data["categories"]}
    detector = run.detector("cpu")
    assert detector.class_names == [name_of[c] for c in sorted(name_of)]  # the unused class keeps its slot
    metrics = detector.evaluate(detections=workdir / "dets.json")
    assert set(metrics["per_class"]) == {name_of[a["category_id"]] for a in data["annotations"]}  # with ground truth
    dets = json.loads((workdir / "dets.json").read_text())
    assert dets and {d["category_id"] for d in dets} <= set(name_of)
    image = dataset / "val" / data["images"][0]["file_name"]
    (result,) = detector.predict(str(image), score=0.0)
    assert len(result) and all(name_of[c["category_id"]] == c["label"] for c in result.to_dict()["detections"])
    assert {r["category_id"] for r in result.to_coco(7)} <= set(name_of)
    capsys.readouterr()
    assert run_cli(["predict", str(image), "--checkpoint", str(run.dir / "best.pt"), "--score", "0",
                    "--out", str(workdir / "pred")]) == 0
    (record,) = json.loads((workdir / "pred" / "detections.json").read_text())
    assert all(name_of[d["category_id"]] == d["label"] for d in record["detections"])


def test_onnx_keeps_the_category_ids(run, dataset, workdir):
    extra("onnx")
    extra("onnxruntime")
    path = dinokit.load(run.dir / "best.pt", "cpu").export(workdir / "ids.onnx")
    onnx_detector = dinokit.load(path, "cpu")
    data = json.loads((dataset / "annotations" / "instances_val.json").read_text())
    image = dataset / "val" / data["images"][0]["file_name"]
    (result,) = onnx_detector.predict(str(image), score=0.0)
    name_of = {c["id"]: c["name"] for c in data["categories"]}
    assert result.category_ids == sorted(name_of)
    assert all(name_of[d["category_id"]] == d["label"] for d in result.to_dict()["detections"])


def test_annotation_id_zero_is_not_read_as_no_match(tmp_path):
    """pycocotools marks an unmatched detection with ground-truth id 0: a match to annotation 0
    would count as a false positive. Loading through dinokit renumbers such ids."""
    from dinokit.data.validate import load_coco

    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
            "annotations": [{"id": 0, "image_id": 1, "category_id": 0, "bbox": [10, 10, 20, 20]}],
            "categories": [{"id": 0, "name": "z"}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    det = [{"image_id": 1, "category_id": 0, "bbox": [10, 10, 20, 20], "score": 0.9}]
    raw = COCO()
    raw.dataset = json.loads(json.dumps(data))
    for a in raw.dataset["annotations"]:
        a.update(area=400, iscrowd=0)
    with contextlib.redirect_stdout(io.StringIO()):
        raw.createIndex()
    assert evaluate_detections(raw, det)["AP"] == 0.0  # the pitfall, measured
    metrics = evaluate_detections(load_coco(tmp_path / "a.json"), det)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["F1"] == 1.0


def test_annotation_of_an_unlisted_category_is_one_error(dataset, workdir, capsys):
    bad = workdir / "bad"
    write_shapes(bad, 2, 1, 64, 1)
    path = bad / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert run_cli(["train", "--data", str(bad), "--steps", "1", "--out", str(workdir / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown category id" in err and "category_id 99" in err
    assert "Traceback" not in err
