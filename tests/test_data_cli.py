"""`dinokit data check | convert | shapes` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from dinokit.config import DataConfig
from dinokit.data.cli import app
from dinokit.data.coco import build_dataset, resolve_source
from dinokit.errors import DataError

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))


def test_shapes_then_check_ok(tmp_path):
    out = tmp_path / "s"
    res = runner.invoke(app, ["shapes", "--out", str(out), "--train", "3", "--val", "2", "--size", "64", "--seed", "5"])
    assert res.exit_code == 0, res.output
    assert len(list((out / "train").glob("*.jpg"))) == 3 and (out / "annotations" / "instances_val.json").is_file()
    res = runner.invoke(app, ["check", str(out), "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "plots")], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "train" in res.output and "val" in res.output and "usable" in res.output
    assert json.loads((tmp_path / "r.json").read_text())["fatal"] is False
    assert "labels per class" in res.output and "median box" in res.output and "background images" in res.output
    assert (tmp_path / "plots" / "labels.png").is_file() and (tmp_path / "plots" / "labels_val.png").is_file()

    def no_nan(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON")

    report = json.loads((tmp_path / "r.json").read_text(), parse_constant=no_nan)
    for split in report["splits"]:
        assert sum(c["instances"] for c in split["class_stats"].values()) == split["annotations"]
        assert split["background_images"] == 0
    res = runner.invoke(app, ["shapes", "--out", str(out), "--train", "1", "--val", "1"])
    assert isinstance(res.exception, DataError) and "already exists" in str(res.exception)


def test_check_fatal_exits_1_and_names_problems(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20},
                       {"id": 2, "file_name": "b.png", "width": 20, "height": 20}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, -4, 4]}],
            "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    res = runner.invoke(app, ["check", str(tmp_path / "ann.json"), "--out", str(tmp_path / "plots")], env=WIDE)
    assert res.exit_code == 1, res.output
    assert "negative box size" in res.output and "missing image" in res.output and "b.png" in res.output
    assert "fatal" in res.output


def test_check_bad_path_raises_data_error(tmp_path):
    res = runner.invoke(app, ["check", str(tmp_path / "nope")])
    assert isinstance(res.exception, DataError) and "does not exist" in str(res.exception)


def _tiny_voc(root: Path) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for name in ("a", "b", "c", "d", "e"):
        Image.new("RGB", (32, 32)).save(root / "JPEGImages" / f"{name}.jpg")
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>32</width><height>32</height></size>"
            "<object><name>thing</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>12</xmax><ymax>13</ymax></bndbox>"
            "</object></annotation>")
    return root


def test_convert_voc_writes_usable_json_elsewhere(tmp_path):
    src = _tiny_voc(tmp_path / "voc")
    out = tmp_path / "elsewhere" / "voc.json"
    res = runner.invoke(app, ["convert", "--from", "voc", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "5 images" in res.output and "thing" in res.output
    coco = json.loads(out.read_text())
    assert coco["images"][0]["file_name"] == "../voc/JPEGImages/a.jpg"  # relative to the JSON's folder
    cfg = DataConfig(data=str(out), image_size=32)
    ds = build_dataset(resolve_source(cfg), cfg, "val", train=False)
    assert len(ds) == 5 and ds[0][1]["boxes"].tolist() == [[7 / 32, 8 / 32, 10 / 32, 10 / 32]]

    res = runner.invoke(app, ["convert", "--from", "voc", str(src), "--out", str(out), "--split", "val"])
    assert res.exit_code == 0 and len(json.loads(out.read_text())["images"]) == 1


def test_convert_yolo_and_bad_arguments(tmp_path):
    root = tmp_path / "y"
    (root / "images" / "train").mkdir(parents=True)
    (root / "images" / "val").mkdir(parents=True)
    Image.new("RGB", (10, 10)).save(root / "images" / "train" / "x.jpg")
    Image.new("RGB", (10, 10)).save(root / "images" / "val" / "y.jpg")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [one]\n")
    out = root / "coco.json"
    res = runner.invoke(app, ["convert", "--from", "yolo", str(root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert [i["file_name"] for i in json.loads(out.read_text())["images"]] == ["images/train/x.jpg", "images/val/y.jpg"]

    res = runner.invoke(app, ["convert", "--from", "coco", str(root), "--out", str(out)])
    assert res.exit_code == 2  # Typer rejects the choice itself
    res = runner.invoke(app, ["convert", "--from", "yolo", str(tmp_path / "none"), "--out", str(out)])
    assert isinstance(res.exception, DataError) and "does not exist" in str(res.exception)
    res = runner.invoke(app, ["convert", "--from", "yolo", str(root), "--out", str(tmp_path / "x.txt")])
    assert isinstance(res.exception, DataError) and ".json" in str(res.exception)
