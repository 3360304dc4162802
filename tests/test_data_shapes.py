"""The built-in shapes dataset: deterministic, varied, and cached atomically."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinokit.config import DataConfig
from dinokit.data import shapes
from dinokit.data.shapes import CLASSES, LOOK_ALIKES, shapes_dir, write_shapes
from dinokit.errors import DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """60 + 10 images at 128 px: enough for the distribution checks."""
    return write_shapes(tmp_path_factory.mktemp("shapes") / "s", 60, 10, 128, 3)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = _files(write_shapes(tmp_path / "a", 6, 2, 64, 7))
    b = _files(write_shapes(tmp_path / "b", 6, 2, 64, 7))
    c = _files(write_shapes(tmp_path / "c", 6, 2, 64, 8))
    assert a == b
    assert set(a) == set(c)
    assert a["annotations/instances_train.json"] != c["annotations/instances_train.json"]
    assert a["train/000001.jpg"] != c["train/000001.jpg"]
    # image i does not depend on how many images are drawn, and train differs from val
    d = _files(write_shapes(tmp_path / "d", 3, 1, 64, 7))
    assert d["train/000003.jpg"] == a["train/000003.jpg"]
    assert a["val/000001.jpg"] != a["train/000001.jpg"]


def test_layout_and_coco_fields(big):
    for split, n in (("train", 60), ("val", 10)):
        data = json.loads((big / "annotations" / f"instances_{split}.json").read_text())
        assert len(data["images"]) == n
        assert [c["name"] for c in data["categories"]] == list(CLASSES)
        for img in data["images"]:
            with Image.open(big / split / img["file_name"]) as im:
                assert im.size == (128, 128) and im.mode == "RGB"
        ids = [a["id"] for a in data["annotations"]]
        assert len(ids) == len(set(ids))
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
            assert ann["iscrowd"] == 0 and ann["area"] == pytest.approx(w * h, rel=1e-3)


def test_classes_look_alikes_counts_and_sizes(big):
    assert len(CLASSES) >= 6
    assert {a for pair in LOOK_ALIKES for a in pair} <= set(CLASSES) and len(LOOK_ALIKES) >= 3
    data = json.loads((big / "annotations" / "instances_train.json").read_text())
    per_class = Counter(a["category_id"] for a in data["annotations"])
    assert set(per_class) == {i + 1 for i in range(len(CLASSES))}
    assert min(per_class.values()) > 0.5 * max(per_class.values())  # roughly balanced
    per_image = Counter(a["image_id"] for a in data["annotations"])
    assert set(per_image) == {img["id"] for img in data["images"]}  # every image has objects
    assert 1 <= min(per_image.values()) and max(per_image.values()) <= 15
    assert min(per_image.values()) <= 2 and max(per_image.values()) >= 10
    sides = np.array([max(a["bbox"][2:]) for a in data["annotations"]])
    assert sides.min() >= 9  # learnable: objects of about 10 px and more at 128
    assert (sides < 16).any() and (sides > 0.5 * 128).any()
    assert np.median(sides) >= 14


def test_objects_overlap_sometimes_but_stay_visible(big):
    data = json.loads((big / "annotations" / "instances_train.json").read_text())
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    overlapping = 0
    for boxes in by_image.values():
        for i, (x, y, w, h) in enumerate(boxes):
            for (u, v, s, t) in boxes[i + 1:]:  # later objects are drawn on top of earlier ones
                inter = max(0, min(x + w, u + s) - max(x, u)) * max(0, min(y + h, v + t) - max(y, v))
                overlapping += inter > 0
                assert inter <= 0.46 * w * h
    assert overlapping > 0


def test_colour_is_not_the_class(big):
    """Objects of one class come in many colours: the mean colour inside boxes varies widely."""
    data = json.loads((big / "annotations" / "instances_train.json").read_text())
    images = {img["id"]: np.asarray(Image.open(big / "train" / img["file_name"]), np.float32) for img in data["images"]}
    colours = []
    for a in data["annotations"]:
        if a["category_id"] == CLASSES.index("circle") + 1 and a["bbox"][2] > 14:
            x, y, w, h = (int(v) for v in a["bbox"])
            cy, cx = y + h // 2, x + w // 2
            colours.append(images[a["image_id"]][cy - 2:cy + 2, cx - 2:cx + 2].mean((0, 1)))
    assert len(colours) > 5
    assert np.std(np.array(colours), axis=0).mean() > 40


def test_shapes_dir_caches_under_dinokit_cache(tmp_path):
    cfg = DataConfig(shapes_train=4, shapes_val=2, shapes_size=64, shapes_seed=1)
    out = shapes_dir(cfg)
    assert out == tmp_path / "cache" / "shapes" / "4-2-64-1"
    assert (out / "annotations" / "instances_train.json").is_file() and len(list((out / "val").glob("*.jpg"))) == 2
    stamp = (out / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert shapes_dir(cfg) == out
    assert (out / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp  # not rewritten
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_stale_cache_is_rebuilt(tmp_path, monkeypatch):
    cfg = DataConfig(shapes_train=2, shapes_val=1, shapes_size=64, shapes_seed=0)
    out = shapes_dir(cfg)
    monkeypatch.setattr(shapes, "SHAPES_VERSION", shapes.SHAPES_VERSION + 1)
    assert shapes_dir(cfg) == out
    info = json.loads((out / "annotations" / "instances_val.json").read_text())["info"]
    assert info["version"] == shapes.SHAPES_VERSION


def test_refuses_to_overwrite_and_bad_arguments(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="already exists"):
        write_shapes(tmp_path / "full", 2, 1, 64, 0)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(DataError, match="at least one"):
        write_shapes(tmp_path / "x", 0, 1, 64, 0)
    with pytest.raises(DataError, match="size"):
        write_shapes(tmp_path / "x", 1, 1, 8, 0)
    (tmp_path / "empty").mkdir()
    assert (write_shapes(tmp_path / "empty", 1, 1, 64, 0) / "train" / "000001.jpg").is_file()
