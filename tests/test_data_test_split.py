"""The test split, when a dataset has one: COCO instances_test*.json, VOC ImageSets/Main/test.txt,
YOLO `test:` in data.yaml; without one, asking for it is one clear error."""

from __future__ import annotations

import json
import shutil

import pytest

from dinokit.config import DataConfig
from dinokit.data.coco import build_dataset, resolve_source
from dinokit.errors import DataError
from tests.test_background_images import _coco_dataset, _image, _voc_dataset, _voc_xml, _yolo_dataset


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))


def _test_files(tmp_path, kind: str):
    root = tmp_path / kind
    if kind == "coco":
        _coco_dataset(root)
        shutil.copytree(root / "val", root / "test")
        data = json.loads((root / "annotations" / "instances_val.json").read_text())
        data["images"] = data["images"][:1]  # one image, to tell it from val
        (root / "annotations" / "instances_test.json").write_text(json.dumps(data))
    elif kind == "voc":
        _voc_dataset(root)
        _image(root / "JPEGImages" / "t.jpg")
        _voc_xml(root / "Annotations" / "t.xml", "t.jpg", [("thing", [2, 2, 9, 9])])
        (root / "ImageSets" / "Main" / "test.txt").write_text("t\n")
    else:
        _yolo_dataset(root)
        _image(root / "test" / "images" / "t.jpg")
        (root / "test" / "labels").mkdir(parents=True)
        (root / "test" / "labels" / "t.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        (root / "data.yaml").write_text("names: [thing]\ntrain: train/images\nval: val/images\ntest: test/images\n")
    return root


@pytest.mark.parametrize("kind", ["coco", "voc", "yolo"])
def test_test_split_is_found(tmp_path, kind):
    cfg = DataConfig(data=str(_test_files(tmp_path, kind)), image_size=32, min_size=32)
    test = build_dataset(resolve_source(cfg), cfg, "test", train=False)
    assert len(test) == 1
    assert len(build_dataset(resolve_source(cfg), cfg, "val", train=False)) >= 2


def test_no_test_split_is_one_error(tmp_path):
    cfg = DataConfig(data=str(_coco_dataset(tmp_path / "plain")))
    with pytest.raises(DataError, match="has no test split"):
        build_dataset(resolve_source(cfg), cfg, "test", train=False)
