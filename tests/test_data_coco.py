"""COCO sources and the detection dataset: target format, box geometry, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dinokit.config import DataConfig
from dinokit.data.coco import build_dataset, resolve_source
from dinokit.data.transforms import collate, train_sizes
from dinokit.errors import DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))


def write_coco(folder: Path, images: list[tuple[str, int, int]], anns: list[dict], cats=((1, "a"), (2, "b")),
               json_name: str = "ann.json", image_dir: str = "") -> Path:
    """Images (name, w, h) with a white rectangle per annotation on black, and their JSON."""
    (folder / image_dir).mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (name, w, h) in enumerate(images, start=1):
        pixels = np.zeros((h, w, 3), np.uint8)
        for a in anns:
            if a["image_id"] == k:
                x, y, bw, bh = (int(v) for v in a["bbox"])
                pixels[y:y + bh, x:x + bw] = 255
        Image.fromarray(pixels).save(folder / image_dir / name)
        entries.append({"id": k, "file_name": name, "width": w, "height": h})
    data = {"images": entries, "annotations": anns, "categories": [{"id": i, "name": n} for i, n in cats]}
    path = folder / json_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def ann(id: int, image_id: int, cat: int, bbox: list[float], **extra) -> dict:
    return {"id": id, "image_id": image_id, "category_id": cat, "bbox": bbox, **extra}


def simple(tmp_path: Path, **kw) -> Path:
    # image 1: 100 x 50 (w x h) with box xywh [10, 5, 30, 20]; image 2 has no annotations
    return write_coco(tmp_path / "d", [("one.png", 100, 50), ("two.png", 40, 40)],
                      [ann(7, 1, 2, [10, 5, 30, 20])], **kw)


def cfg_for(path: Path, **kw) -> DataConfig:
    return DataConfig(data=str(path), **kw)


# --------------------------------------------------------------------------- format and geometry


def test_eval_item_format_and_known_box(tmp_path):
    path = simple(tmp_path)
    cfg = cfg_for(path, image_size=200)
    source = resolve_source(cfg)
    assert source.class_names == ["a", "b"] and source.cat_ids == [1, 2]
    assert source.train_json == source.val_json == path and source.train_images == path.parent
    ds = build_dataset(source, cfg, "val", train=False)
    assert len(ds) == 2 and ds.class_names == ["a", "b"] and ds.cat_ids == [1, 2] and ds.ann_file == path
    assert ds.coco.getImgIds() == [1, 2]

    image, target = ds[0]
    assert type(image) is torch.Tensor and image.dtype == torch.float32 and image.shape == (3, 100, 200)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert set(target) == {"boxes", "labels", "image_id", "orig_size", "size"}
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    # xyxy px [10, 5, 40, 25] in 100 x 50 -> cxcywh normalised, whatever the resize
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.25, 0.3, 0.3, 0.4]]))
    assert target["labels"].tolist() == [1]  # category id 2 -> contiguous index 1
    assert target["image_id"] == 1 and isinstance(target["image_id"], int)
    assert target["orig_size"].tolist() == [50, 100] and target["size"].tolist() == [100, 200]
    assert target["orig_size"].dtype == target["size"].dtype == torch.int64

    image, target = ds[1]  # no annotations is normal
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and image.shape == (3, 200, 200)


def _bright_box(image: torch.Tensor) -> list[float]:
    """cxcywh normalised box of the white rectangle in an image (3, H, W)."""
    ys, xs = torch.nonzero(image.mean(0) > 0.5, as_tuple=True)
    H, W = image.shape[-2:]
    x0, x1, y0, y1 = xs.min().item(), xs.max().item() + 1, ys.min().item(), ys.max().item() + 1
    return [(x0 + x1) / 2 / W, (y0 + y1) / 2 / H, (x1 - x0) / W, (y1 - y0) / H]


def test_train_boxes_follow_flip_and_resize(tmp_path):
    path = write_coco(tmp_path / "d", [("one.png", 160, 96)], [ann(1, 1, 1, [16, 24, 48, 32])])
    cfg = cfg_for(path, image_size=128, min_size=64)
    ds = build_dataset(resolve_source(cfg), cfg, "train", train=True)
    assert train_sizes(cfg) == [64, 96, 128]
    seen_flip, seen_sizes = set(), set()
    for seed in range(12):
        torch.manual_seed(seed)
        image, target = ds[0]
        H, W = target["size"].tolist()
        assert (H, W) == tuple(image.shape[-2:]) and max(H, W) in (64, 96, 128)
        box = target["boxes"][0].tolist()
        # xyxy [16, 24, 64, 56] of 160 x 96: cx 0.25 (0.75 flipped), cy 0.4167, w 0.3, h 0.3333
        flipped = box[0] > 0.5
        expected = [0.75 if flipped else 0.25, 40 / 96, 0.3, 32 / 96]
        assert box == pytest.approx(expected, abs=1e-4)
        assert box == pytest.approx(_bright_box(image), abs=2.5 / min(H, W))  # the pixels moved with it
        seen_flip.add(flipped)
        seen_sizes.add(max(H, W))
    assert seen_flip == {True, False} and len(seen_sizes) >= 2


def test_augment_off_is_the_eval_resize(tmp_path):
    path = simple(tmp_path)
    cfg = cfg_for(path, image_size=64, augment=False)
    ds = build_dataset(resolve_source(cfg), cfg, "train", train=True)
    for _ in range(3):
        image, target = ds[0]
        assert image.shape == (3, 32, 64)
        torch.testing.assert_close(target["boxes"], torch.tensor([[0.25, 0.3, 0.3, 0.4]]))


def test_crowd_and_degenerate_boxes_are_not_targets(tmp_path):
    path = write_coco(tmp_path / "d", [("one.png", 64, 64)], [
        ann(1, 1, 1, [4, 4, 20, 20]), ann(2, 1, 2, [30, 30, 10, 10], iscrowd=1), ann(3, 1, 1, [40, 5, 0, 10]),
        ann(4, 1, 2, [50, 50, 30, 30]), ann(5, 1, 2, [70, 10, 5, 5]),  # partly / wholly outside the image
    ])
    cfg = cfg_for(path, image_size=64)
    ds = build_dataset(resolve_source(cfg), cfg, "val", train=False)
    _, target = ds[0]
    assert target["labels"].tolist() == [0, 1]
    torch.testing.assert_close(target["boxes"][1], torch.tensor([57 / 64, 57 / 64, 14 / 64, 14 / 64]))  # clipped
    assert len(ds.coco.getAnnIds()) == 5  # the evaluator still sees them all


def test_image_modes_become_rgb(tmp_path):
    folder = tmp_path / "d"
    path = write_coco(folder, [("g.png", 32, 32), ("rgba.png", 32, 32), ("cmyk.jpg", 32, 32), ("p.png", 32, 32)], [])
    Image.new("L", (32, 32), 100).save(folder / "g.png")
    Image.new("RGBA", (32, 32), (1, 2, 3, 4)).save(folder / "rgba.png")
    Image.new("CMYK", (32, 32), (10, 20, 30, 0)).save(folder / "cmyk.jpg")
    Image.new("P", (32, 32), 3).save(folder / "p.png")
    cfg = cfg_for(path, image_size=32)
    ds = build_dataset(resolve_source(cfg), cfg, "val", train=False)
    for i in range(4):
        assert ds[i][0].shape == (3, 32, 32)


def test_collate_and_dataloader_with_a_worker(tmp_path):
    path = simple(tmp_path)
    cfg = cfg_for(path, image_size=64)
    ds = build_dataset(resolve_source(cfg), cfg, "val", train=False)
    loader = DataLoader(ds, batch_size=2, collate_fn=collate, num_workers=1)
    images, masks, targets = next(iter(loader))
    assert images.shape == (2, 3, 64, 64) and masks.shape == (2, 64, 64)
    assert masks[0, 32:].all() and not masks[0, :32].any() and not masks[1].any()
    assert [t["image_id"] for t in targets] == [1, 2]


# --------------------------------------------------------------------------- resolving --data


def test_coco_folder_layout(tmp_path):
    root = tmp_path / "coco"
    write_coco(root, [("a.png", 32, 32)], [ann(1, 1, 1, [1, 1, 8, 8])],
               json_name="annotations/instances_train2017.json", image_dir="train2017")
    write_coco(root, [("b.png", 32, 32)], [ann(1, 1, 2, [1, 1, 8, 8])],
               json_name="annotations/instances_val2017.json", image_dir="val2017")
    source = resolve_source(DataConfig(data=str(root)))
    assert source.kind == "coco"
    assert source.train_json.name == "instances_train2017.json" and source.train_images == root / "train2017"
    assert source.val_json.name == "instances_val2017.json" and source.val_images == root / "val2017"
    ds = build_dataset(source, DataConfig(image_size=32), "val", train=False)
    assert ds[0][1]["labels"].tolist() == [1]


def test_single_json_with_images_sibling(tmp_path):
    root = tmp_path / "j"
    write_coco(root, [("a.png", 32, 32)], [ann(1, 1, 1, [1, 1, 8, 8])], json_name="labels.json", image_dir="images")
    source = resolve_source(DataConfig(data=str(root / "labels.json")))
    assert source.train_images == source.val_images == root / "images"


def test_shapes_source(tmp_path):
    cfg = DataConfig(data="shapes", shapes_train=3, shapes_val=2, shapes_size=64, image_size=64)
    source = resolve_source(cfg)
    assert source.kind == "shapes" and len(source.class_names) >= 6
    assert source.train_json.is_relative_to(tmp_path / "cache")
    ds = build_dataset(source, cfg, "val", train=False)
    assert len(ds) == 2 and ds[0][1]["boxes"].shape[0] >= 1


# --------------------------------------------------------------------------- bad input -> DataError


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"data path does not exist: .*nowhere"):
        resolve_source(DataConfig(data=str(tmp_path / "nowhere")))


def test_unknown_folder_layout(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        resolve_source(DataConfig(data=str(tmp_path / "stuff")))


@pytest.mark.parametrize("content, problem", [
    ('{"foo": 1}', "missing 'images'"),
    ('{"images": [], "annotations": []}', "missing 'categories'"),
    ('[1, 2]', "not COCO"),
    ('{"images": [', "not valid JSON"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}', "file_name"),
    ('{"images": [], "annotations": [{"id": 3, "image_id": 1, "category_id": 1}], '
     '"categories": [{"id": 1, "name": "a"}]}', "annotation 3 has no 'bbox'"),
])
def test_not_coco_json(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match="bad.json") as info:
        resolve_source(DataConfig(data=str(path)))
    assert problem in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("bad, problem", [
    (ann(42, 1, 1, [10, 10, -5, 4]), "annotation 42: negative box size"),
    (ann(43, 1, 9, [10, 10, 5, 4]), "annotation 43: unknown category id"),
    (ann(44, 7, 1, [10, 10, 5, 4]), "annotation 44: unknown image id"),
    (ann(7, 1, 1, [10, 10, 5, 4]), "annotation 7: duplicate annotation id"),
])
def test_bad_annotations_name_file_id_and_problem(tmp_path, bad, problem):
    path = write_coco(tmp_path / "d", [("one.png", 64, 64)], [ann(7, 1, 2, [1, 1, 5, 5]), bad])
    cfg = cfg_for(path)
    source = resolve_source(cfg)  # resolving reads only the categories
    with pytest.raises(DataError, match="ann.json") as info:
        build_dataset(source, cfg, "train", train=True)
    assert problem in str(info.value)


def test_val_category_mismatch(tmp_path):
    root = tmp_path / "coco"
    write_coco(root, [("a.png", 32, 32)], [], json_name="annotations/instances_train.json", image_dir="train")
    write_coco(root, [("b.png", 32, 32)], [], cats=((1, "a"), (2, "zebra")),
               json_name="annotations/instances_val.json", image_dir="val")
    source = resolve_source(DataConfig(data=str(root)))
    with pytest.raises(DataError, match="instances_val.json: category 2: category differs from train"):
        build_dataset(source, DataConfig(), "val", train=False)


def test_corrupt_truncated_and_missing_images(tmp_path):
    folder = tmp_path / "d"
    path = write_coco(folder, [("ok.png", 32, 32), ("garbage.jpg", 32, 32), ("cut.jpg", 64, 64), ("gone.png", 8, 8)],
                      [ann(1, 1, 1, [1, 1, 8, 8])])
    (folder / "garbage.jpg").write_bytes(b"this is not an image")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "cut.jpg")
    data = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "gone.png").unlink()
    cfg = cfg_for(path, image_size=32)
    ds = build_dataset(resolve_source(cfg), cfg, "val", train=False)
    assert ds[0][0].shape == (3, 32, 32)
    assert ds[2][0].shape == (3, 32, 32)  # the truncated JPEG: decoded as far as the file allows
    assert {Path(p).name for p in ds._base.truncated} == {"cut.jpg"}
    for index, name, reason in ((1, "garbage.jpg", "cannot identify"), (3, "gone.png", "file not found")):
        with pytest.raises(DataError, match=f"cannot read image .*{name}: .*{reason}"):
            ds[index]

    cfg = cfg_for(path, image_size=32, skip_bad_images=True)
    ds = build_dataset(resolve_source(cfg), cfg, "val", train=False)
    _, target = ds[1]  # 1 and 3 are bad: replaced by the next good one, wrapping around to 0
    assert target["image_id"] == 3
    assert ds[3][1]["image_id"] == 1
    assert {Path(p).name for p in ds.bad_images} == {"garbage.jpg", "gone.png"}


def test_all_images_bad_with_skip(tmp_path):
    folder = tmp_path / "d"
    path = write_coco(folder, [("x.png", 8, 8)], [])
    (folder / "x.png").write_bytes(b"")
    cfg = cfg_for(path, skip_bad_images=True)
    ds = build_dataset(resolve_source(cfg), cfg, "train", train=True)
    with pytest.raises(DataError, match="no readable image"):
        ds[0]
    with pytest.raises(IndexError):
        ds[5]


def test_split_without_images(tmp_path):
    path = write_coco(tmp_path / "d", [], [])
    cfg = cfg_for(path)
    with pytest.raises(DataError, match="ann.json lists no images"):
        build_dataset(resolve_source(cfg), cfg, "train", train=True)


def test_skipped_bad_images_leave_the_dataset_and_the_ground_truth(tmp_path):
    """--skip-bad-images: a bad validation image is not replaced by its neighbour (which would be
    scored twice, and the bad image's boxes counted as missed): it leaves the items and the COCO
    ground truth alike, so perfect detections of the rest score AP 1."""
    from dinokit.data.coco import preflight_images
    from dinokit.infer.evaluator import evaluate_detections

    folder = tmp_path / "d"
    path = write_coco(folder, [("a.png", 64, 64), ("bad.png", 64, 64), ("c.png", 64, 64)],
                      [ann(1, 1, 1, [4, 4, 20, 20]), ann(2, 2, 1, [8, 8, 30, 30]), ann(3, 3, 2, [10, 10, 24, 24])])
    (folder / "bad.png").write_bytes(b"not an image")
    cfg = cfg_for(path, image_size=64, skip_bad_images=True)
    ds = build_dataset(resolve_source(cfg), cfg, "val", train=False)
    note = preflight_images([ds], skip_bad_images=True)
    assert "1 undecodable image(s) skipped" in note
    assert len(ds) == 2 and ds.ids == [1, 3]
    assert [ds[i][1]["image_id"] for i in range(len(ds))] == [1, 3]
    assert sorted(ds.coco.getImgIds()) == [1, 3] and sorted(a["id"] for a in ds.coco.dataset["annotations"]) == [1, 3]
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in ds.coco.dataset["annotations"]]
    assert evaluate_detections(ds.coco, perfect)["AP"] == pytest.approx(1.0)


def test_one_json_for_both_splits_is_said(tmp_path, capsys):
    """`--data file.json` trains and validates on the same images: `data check` and the source say so."""
    from dinokit.data.coco import same_images_note
    from tests.cli_helpers import run_cli

    path = simple(tmp_path)
    note = same_images_note(resolve_source(cfg_for(path)))
    assert note is not None and "same 2 images" in note and "ann.json" in note
    folder = tmp_path / "coco"
    write_coco(folder / "train", [("x.png", 8, 8)], [], json_name="../annotations/instances_train.json")
    write_coco(folder / "val", [("y.png", 8, 8)], [], json_name="../annotations/instances_val.json")
    assert same_images_note(resolve_source(cfg_for(folder))) is None
    capsys.readouterr()
    assert run_cli(["data", "check", str(path), "--out", str(tmp_path / "check")]) == 0
    assert "same 2 images" in capsys.readouterr().out.replace("\n", " ")
