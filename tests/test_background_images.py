"""Background images (no boxes) in every format: COCO images without annotations, VOC XML without
objects, YOLO empty label files and images without a label file. Each is a training item with no
target (a negative), is part of the evaluation ground truth (a detection on it is a false
positive), and `data check` counts it."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from dinokit.config import DataConfig
from dinokit.data.check import NO_ANNOTATIONS, NO_LABEL_FILE, check_data
from dinokit.data.coco import build_dataset, resolve_source
from dinokit.infer.diagnostics import diagnose
from dinokit.infer.evaluator import evaluate_detections


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(path)


def _voc_xml(path: Path, filename: str, objects: list[tuple[str, list[int]]]) -> None:
    body = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{filename}</filename><size><width>32</width><height>32</height>"
                    f"</size>{body}</annotation>")


def _coco_dataset(root: Path) -> Path:
    for split in ("train", "val"):
        _image(root / split / "a.jpg")
        _image(root / split / "empty.jpg")
        data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 32},
                           {"id": 2, "file_name": "empty.jpg", "width": 32, "height": 32}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10]}],
                "categories": [{"id": 1, "name": "thing"}]}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def _voc_dataset(root: Path) -> Path:
    for split in ("train", "val"):
        for stem, objects in ((f"{split}_a", [("thing", [4, 4, 14, 14])]), (f"{split}_empty", [])):
            _image(root / "JPEGImages" / f"{stem}.jpg")
            _voc_xml(root / "Annotations" / f"{stem}.xml", f"{stem}.jpg", objects)
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(f"{split}_a\n{split}_empty\n")
    return root


def _yolo_dataset(root: Path) -> Path:
    for split in ("train", "val"):
        for stem, label in (("a", "0 0.3 0.3 0.3 0.3\n"), ("empty", ""), ("unlabelled", None)):
            _image(root / split / "images" / f"{stem}.jpg")
            if label is not None:
                (root / split / "labels").mkdir(parents=True, exist_ok=True)
                (root / split / "labels" / f"{stem}.txt").write_text(label)
    (root / "data.yaml").write_text("names: [thing]\ntrain: train/images\nval: val/images\n")
    return root


@pytest.mark.parametrize("make, background", [(_coco_dataset, 1), (_voc_dataset, 1), (_yolo_dataset, 2)])
def test_background_images_train_evaluate_and_are_counted(tmp_path, make, background):
    root = make(tmp_path / "data")
    cfg = DataConfig(data=str(root), image_size=32, min_size=32)
    source = resolve_source(cfg)
    train = build_dataset(source, cfg, "train", train=True)
    empty = [i for i in range(len(train)) if len(train[i][1]["labels"]) == 0]
    assert len(train) == 1 + background and len(empty) == background  # negatives are training items
    val = build_dataset(source, cfg, "val", train=False)
    assert len(val.coco.getImgIds()) == 1 + background  # and ground truth of the evaluation
    report = check_data(cfg)
    for split in report.splits:
        assert split.background == background
        assert split.findings[NO_ANNOTATIONS].count == background
    if make is _yolo_dataset:  # the image without a label file is told apart
        assert [s.findings[NO_LABEL_FILE].count for s in report.splits] == [1, 1]


def test_a_detection_on_a_background_image_is_a_false_positive():
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 32},
                   {"id": 2, "file_name": "empty.jpg", "width": 32, "height": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "area": 100, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    dets = [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "score": 0.6},
            {"image_id": 2, "category_id": 1, "bbox": [4, 4, 10, 10], "score": 0.9}]
    metrics = evaluate_detections(coco, dets)
    assert metrics["AP50"] == pytest.approx(0.5, abs=0.01)  # the background hit ranks first: precision 1/2
    assert metrics["per_class_prf"]["thing"] == {"P": 0.5, "R": 1.0, "F1": pytest.approx(2 / 3)}
    np.testing.assert_array_equal(diagnose(coco, dets).confusion, [[1, 0], [1, 0]])
