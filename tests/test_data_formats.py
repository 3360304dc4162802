"""Pascal VOC and YOLO -> COCO: tiny folders written here, and the real raccoon photographs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from dinokit.config import DataConfig
from dinokit.data.coco import build_dataset, resolve_source
from dinokit.data.formats import voc_to_coco, yolo_to_coco
from dinokit.errors import DataError
from tests.services import SHARED, needs, shared_missing

RACCOON = SHARED / "datasets" / "raccoon"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))


VOC_XML = """<annotation>
  <filename>{name}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""
VOC_OBJECT = "<object><name>{cls}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>" \
             "<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"


def write_voc(root: Path, items: dict[str, list[tuple]], splits: dict[str, list[str]] | None = None,
              ann_dir: str = "Annotations", img_dir: str = "JPEGImages", size=(80, 60)) -> Path:
    (root / ann_dir).mkdir(parents=True)
    (root / img_dir).mkdir(parents=True)
    for name, objects in items.items():
        Image.new("RGB", size, (90, 90, 90)).save(root / img_dir / f"{name}.jpg")
        objs = "".join(VOC_OBJECT.format(cls=c, x0=a, y0=b, x1=x, y1=y) for c, a, b, x, y in objects)
        (root / ann_dir / f"{name}.xml").write_text(VOC_XML.format(name=name, w=size[0], h=size[1], objects=objs))
    if splits:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        for split, names in splits.items():
            (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def test_voc_with_split_lists(tmp_path):
    root = write_voc(tmp_path / "voc", {
        "a": [("dog", 10, 20, 30, 50), ("cat", 0, 0, 80, 60)], "b": [("dog", 5, 5, 15, 15)], "c": [],
    }, splits={"train": ["a", "c"], "val": ["b"]})
    train = voc_to_coco(root, "train")
    assert [(c["id"], c["name"]) for c in train["categories"]] == [(1, "cat"), (2, "dog")]
    assert [i["file_name"] for i in train["images"]] == ["JPEGImages/a.jpg", "JPEGImages/c.jpg"]
    assert train["images"][0]["width"] == 80 and train["images"][0]["height"] == 60
    boxes = {a["category_id"]: a["bbox"] for a in train["annotations"]}
    assert boxes == {2: [10, 20, 20, 30], 1: [0, 0, 80, 60]}
    val = voc_to_coco(root, "val")
    assert len(val["images"]) == 1 and val["categories"] == train["categories"]  # same ids in every split
    assert len(voc_to_coco(root, None)["images"]) == 3

    cfg = DataConfig(data=str(root), image_size=40)
    source = resolve_source(cfg)
    assert source.kind == "voc" and source.class_names == ["cat", "dog"] and source.train_images == root.resolve()
    ds = build_dataset(source, cfg, "train", train=False)
    _, target = ds[0]
    assert target["labels"].tolist() == [1, 0]
    assert target["boxes"][0].tolist() == pytest.approx([0.25, 35 / 60, 0.25, 0.5])
    assert resolve_source(cfg).train_json == source.train_json  # converted once, then cached


def test_voc_seeded_split_without_lists(tmp_path):
    root = write_voc(tmp_path / "voc", {f"im{k}": [("x", 1, 1, 9, 9)] for k in range(10)})
    train, val = voc_to_coco(root, "train"), voc_to_coco(root, "val")
    names = lambda d: {i["file_name"] for i in d["images"]}  # noqa: E731
    assert len(names(train)) == 8 and len(names(val)) == 2 and not names(train) & names(val)
    assert names(voc_to_coco(root, "val")) == names(val)  # seeded: the same every time


def test_voc_bad_xml(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("x", 1, 1, 9, 9)]})
    (root / "Annotations" / "broken.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"cannot parse VOC XML .*broken.xml"):
        voc_to_coco(root, None)
    (root / "Annotations" / "broken.xml").write_text(VOC_XML.format(
        name="a", w=8, h=8, objects="<object><name>x</name><bndbox><xmin>1</xmin></bndbox></object>"))
    with pytest.raises(DataError, match=r"broken.xml: object 0 .*box coordinate"):
        voc_to_coco(root, None)
    with pytest.raises(DataError, match="unknown split"):
        voc_to_coco(root, "dev")
    (root / "Annotations" / "broken.xml").unlink()
    with pytest.raises(DataError, match="has no ImageSets/Main/test.txt"):  # test: only from the author's lists
        voc_to_coco(root, "test")


@needs("SHARED", shared_missing(RACCOON))  # the raccoon photographs
def test_raccoon_voc_uses_the_authors_split(tmp_path):
    train, val = voc_to_coco(RACCOON, "train"), voc_to_coco(RACCOON, "val")
    assert (len(train["images"]), len(val["images"])) == (160, 40)
    assert [c["name"] for c in train["categories"]] == ["raccoon"]
    listed = {line.split(",")[0] for line in (RACCOON / "test_labels.csv").read_text().splitlines()[1:] if line}
    assert {Path(i["file_name"]).name for i in val["images"]} == listed
    assert len(train["annotations"]) + len(val["annotations"]) == 217
    one = next(i for i in train["images"] + val["images"] if i["file_name"] == "images/raccoon-1.jpg")
    box = next(a["bbox"] for a in train["annotations"] + val["annotations"] if a["image_id"] == one["id"])
    assert (one["width"], one["height"]) == (650, 417) and box == [81, 88, 441, 320]

    cfg = DataConfig(data=str(RACCOON), image_size=160)
    source = resolve_source(cfg)
    ds = build_dataset(source, cfg, "val", train=False)
    image, target = ds[0]
    assert max(image.shape[-2:]) == 160 and image.shape[0] == 3
    assert target["boxes"].shape[1] == 4 and ((0 <= target["boxes"]) & (target["boxes"] <= 1)).all()


def write_yolo(root: Path) -> Path:
    for split, names in (("train", ["p", "q"]), ("val", ["r"])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (100, 50)).save(root / "images" / split / f"{name}.jpg")
    (root / "labels" / "train" / "p.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.25 0.5 0.1 0.2\n")
    # q has no label file: an image without objects
    (root / "labels" / "val" / "r.txt").write_text("0 0.1 0.1 0.3 0.3 0.2 0.3\n")  # a segment polygon
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [cat, dog]\n")
    return root


def test_yolo(tmp_path):
    root = write_yolo(tmp_path / "yolo")
    train = yolo_to_coco(root, "train")
    assert [c["name"] for c in train["categories"]] == ["cat", "dog"]
    assert [i["file_name"] for i in train["images"]] == ["images/train/p.jpg", "images/train/q.jpg"]
    first = train["annotations"][0]
    assert first["category_id"] == 2 and first["bbox"] == pytest.approx([40, 15, 20, 20])
    assert train["annotations"][1]["bbox"] == pytest.approx([20, 20, 10, 10])
    val = yolo_to_coco(root, "val")
    assert val["annotations"][0]["bbox"] == pytest.approx([10, 5, 20, 10])
    assert len(yolo_to_coco(root, None)["images"]) == 3

    cfg = DataConfig(data=str(root), image_size=100)
    source = resolve_source(cfg)
    assert source.kind == "yolo" and source.class_names == ["cat", "dog"]
    ds = build_dataset(source, cfg, "train", train=False)
    _, target = ds[0]
    assert target["labels"].tolist() == [1, 0]
    assert target["boxes"][0].tolist() == pytest.approx([0.5, 0.5, 0.2, 0.4])
    assert ds[1][1]["boxes"].shape == (0, 4)


def test_yolo_names_dict_and_roboflow_paths(tmp_path):
    root = tmp_path / "rf"
    for split in ("train", "valid"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        Image.new("RGB", (10, 10)).save(root / split / "images" / "x.png")
        (root / split / "labels" / "x.txt").write_text("0 0.5 0.5 1 1\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: {0: thing}\n")
    coco = yolo_to_coco(root / "data.yaml", "val")
    assert coco["images"][0]["file_name"] == "valid/images/x.png" and coco["categories"][0]["name"] == "thing"


def test_yolo_bad_input(tmp_path):
    root = write_yolo(tmp_path / "yolo")
    (root / "labels" / "train" / "p.txt").write_text("0 0.5 0.5 0.2 0.4\n5 0.5 0.5 0.2 0.4\n")
    with pytest.raises(DataError, match=r"p.txt line 2: class 5 is not in 0..1"):
        yolo_to_coco(root, "train")
    (root / "labels" / "train" / "p.txt").write_text("0 0.5 zero 0.2 0.4\n")
    with pytest.raises(DataError, match=r"p.txt line 1: expected"):
        yolo_to_coco(root, "train")
    (root / "data.yaml").write_text("train: images/nope\nval: images/val\nnames: [a]\n")
    with pytest.raises(DataError, match="'train' path does not exist: images/nope"):
        yolo_to_coco(root, "train")
    (root / "data.yaml").write_text("train: images/train\nval: images/val\n")
    with pytest.raises(DataError, match="no 'names'"):
        yolo_to_coco(root, "train")


def test_convert_to_an_unwritable_path_is_one_line(tmp_path, capsys):
    """The converted JSON is written by dinokit.files; a path it cannot write is one error line."""
    from tests.cli_helpers import run_cli

    root = tmp_path / "voc"
    _write_xml(root / "a.xml", "a.jpg", [("dog", 1, 1, 20, 20)])
    Image.new("RGB", (80, 60)).save(root / "a.jpg")
    (tmp_path / "dir.json").mkdir()
    capsys.readouterr()
    assert run_cli(["data", "convert", "--from", "voc", str(root), "--out", str(tmp_path / "dir.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot access") and "dir.json" in err and "\n" not in err, err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def _write_xml(path: Path, filename: str, objects: list[tuple], size=(80, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(VOC_OBJECT.format(cls=c, x0=a, y0=b, x1=x, y1=y) for c, a, b, x, y in objects)
    text = VOC_XML.format(name="unused", w=size[0], h=size[1], objects=objs).replace("unused.jpg", filename)
    path.write_text(text)


def _image(path: Path, size=(80, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)


def test_voc_unusual_folder_names_found_by_filename(tmp_path):
    # labels in "labels_xml/", photos in "fotos/2024/" under names the XML stems do not share
    root = tmp_path / "weird"
    for k in range(5):
        _image(root / "fotos" / "2024" / f"IMG_{k:04d}.JPG")
        _write_xml(root / "labels_xml" / f"frame{k}.xml", f"IMG_{k:04d}.JPG", [("bird", 1, 2, 30 + k, 40)])
    (root / "notes.xml").write_text("<config><a>1</a></config>")  # another XML file: not an annotation
    coco = voc_to_coco(root, None)
    assert sorted(i["file_name"] for i in coco["images"]) == [f"fotos/2024/IMG_{k:04d}.JPG" for k in range(5)]
    assert [c["name"] for c in coco["categories"]] == ["bird"] and len(coco["annotations"]) == 5
    train, val = voc_to_coco(root, "train"), voc_to_coco(root, "val")
    assert (len(train["images"]), len(val["images"])) == (4, 1)  # seeded 80/20 without split lists
    source = resolve_source(DataConfig(data=str(root)))
    assert source.kind == "voc" and source.class_names == ["bird"]


def test_voc_xml_next_to_images_in_split_folders_matched_by_stem(tmp_path):
    # a Roboflow-style export: train/ and valid/ each hold images and XMLs side by side; the XML
    # <filename> names a file that does not exist (renamed on export), so the stem decides, and the
    # same stem in two folders resolves to the image beside the XML
    root = tmp_path / "export"
    for folder in ("train", "valid"):
        for k in range(3):
            _image(root / folder / f"p{k}.png")
            _write_xml(root / folder / f"p{k}.xml", f"original_{k}.jpeg", [("cup", 5, 5, 20, 20)])
    coco = voc_to_coco(root, None)
    files = sorted(i["file_name"] for i in coco["images"])
    assert files == sorted(f"{f}/p{k}.png" for f in ("train", "valid") for k in range(3))


def test_voc_nested_devkit_layout_uses_its_split_lists(tmp_path):
    # VOCdevkit/VOC2012/{Annotations,JPEGImages,ImageSets/Main} one level below the given folder
    root = tmp_path / "dl"
    write_voc(root / "VOCdevkit" / "VOC2012", {"a": [("car", 1, 1, 9, 9)], "b": [("car", 2, 2, 8, 8)],
                                                 "c": [("bus", 0, 0, 5, 5)]},
              splits={"train": ["a", "b"], "val": ["c"]})
    val = voc_to_coco(root, "val")
    assert [i["file_name"] for i in val["images"]] == ["VOCdevkit/VOC2012/JPEGImages/c.jpg"]
    assert len(voc_to_coco(root, "train")["images"]) == 2
    with pytest.raises(DataError, match="no Pascal VOC XML files"):
        voc_to_coco(tmp_path / "dl" / "VOCdevkit" / "VOC2012" / "JPEGImages", None)
