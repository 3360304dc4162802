"""`check_data` finds every planted problem and reports instead of raising."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from dinokit.config import DataConfig
from dinokit.data.check import (
    MISSING_IMAGE, NO_ANNOTATIONS, SIZE_MISMATCH, TRUNCATED_IMAGE, UNREADABLE_IMAGE, check_data,
)
from dinokit.errors import DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))


def write_dataset(root: Path, images: list[dict], anns: list[dict], files: dict[str, tuple[int, int] | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (root / name).write_bytes(content)
        else:
            Image.new("RGB", content).save(root / name)
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    (root / "ann.json").write_text(json.dumps(data))
    return root / "ann.json"


def img(id: int, name: str, w: int = 40, h: int = 30) -> dict:
    return {"id": id, "file_name": name, "width": w, "height": h}


def box(id: int, image_id: int, bbox: list[float], cat: int = 1) -> dict:
    return {"id": id, "image_id": image_id, "category_id": cat, "bbox": bbox}


@pytest.fixture
def planted(tmp_path) -> Path:
    images = [img(1, "ok.png"), img(2, "gone.png"), img(3, "bad.jpg"), img(4, "empty.png"), img(4, "dup.png"),
              img(5, "wrong_size.png")]
    anns = [
        box(1, 1, [1, 1, 10, 10]),
        box(2, 1, [5, 5, -3, 4]),  # negative size
        box(3, 1, [5, 5, 0, 4]),  # zero size
        box(4, 1, [30, 20, 20, 5]),  # sticks out of the 40 x 30 image
        box(5, 1, [1, 1, 5, 5], cat=9),  # unknown category
        box(5, 2, [1, 1, 5, 5]),  # duplicate annotation id
        box(6, 3, [1, 1, 5, 5]),
        box(7, 5, [1, 1, 5, 5]),
    ]
    files = {"ok.png": (40, 30), "bad.jpg": b"\xff\xd8 not really a jpeg", "empty.png": (40, 30), "dup.png": (40, 30),
             "wrong_size.png": (20, 20)}
    return write_dataset(tmp_path / "d", images, anns, files)


def test_finds_every_planted_problem(planted):
    report = check_data(planted)
    assert report.fatal and report.kind == "json" and report.class_names == ["a", "b"]
    [split] = report.splits  # one JSON is both train and val: checked once
    assert split.split == "train+val" and split.num_images == 6 and split.num_annotations == 8
    f = split.findings
    expected = {
        "negative box size": (1, True, "annotation 2"),
        "zero-size box": (1, False, "annotation 3"),
        "box outside image": (1, False, "annotation 4"),
        "unknown category id": (1, True, "annotation 5"),
        "duplicate annotation id": (1, True, "annotation 5"),
        "duplicate image id": (1, True, "image 4"),
        MISSING_IMAGE: (1, True, "gone.png"),
        UNREADABLE_IMAGE: (1, True, "bad.jpg"),
        SIZE_MISMATCH: (1, False, "wrong_size.png"),
        NO_ANNOTATIONS: (2, False, "image 4"),  # empty.png and dup.png
    }
    assert set(f) == set(expected)
    for kind, (count, fatal, where) in expected.items():
        assert (f[kind].count, f[kind].fatal) == (count, fatal), kind
        assert where in f[kind].examples[0], (kind, f[kind].examples)
    assert split.per_class == {"a": 7, "b": 0}  # the unknown category is not counted
    assert json.loads(json.dumps(report.to_dict()))["fatal"] is True


def test_quick_mode_does_not_decode(planted):
    f = check_data(planted, read_images=False).splits[0].findings
    assert MISSING_IMAGE in f and UNREADABLE_IMAGE in f  # an unidentifiable header is still caught
    truncated = planted.parent / "ok.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    quick = check_data(planted, read_images=False).splits[0].findings[UNREADABLE_IMAGE]
    assert "ok.png" not in " ".join(quick.examples)
    full = check_data(planted).splits[0].findings  # decoding finds it: truncated, decoded as far as it goes
    assert "ok.png" in " ".join(full[TRUNCATED_IMAGE].examples) and not full[TRUNCATED_IMAGE].fatal


def test_examples_are_capped(tmp_path):
    images = [img(k, f"m{k}.png") for k in range(1, 21)]
    report = check_data(write_dataset(tmp_path / "d", images, [], {}))
    missing = report.splits[0].findings[MISSING_IMAGE]
    assert missing.count == 20 and len(missing.examples) == 5 and report.fatal


def test_clean_data_and_config_input(tmp_path):
    path = write_dataset(tmp_path / "d", [img(1, "a.png"), img(2, "b.png")], [box(1, 1, [0, 0, 40, 30])],
                         {"a.png": (40, 30), "b.png": (40, 30)})
    report = check_data(DataConfig(data=str(path)))
    assert not report.fatal
    assert set(report.splits[0].findings) == {NO_ANNOTATIONS}


def test_shapes_are_clean(tmp_path):
    report = check_data(DataConfig(data="shapes", shapes_train=4, shapes_val=2, shapes_size=64))
    assert [s.split for s in report.splits] == ["train", "val"]
    assert not report.fatal and all(not s.findings for s in report.splits)


def test_raises_only_when_unusable(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        check_data(tmp_path / "missing")
    (tmp_path / "x.json").write_text('{"images": []}')
    with pytest.raises(DataError, match="x.json is not COCO detection JSON: missing 'annotations'"):
        check_data(tmp_path / "x.json")
