"""What `--data` points at, and the COCO-format detection dataset built from it.

Every source ends up as COCO JSON + an image folder per split (`DataSource`): the built-in shapes
are written as COCO, VOC and YOLO folders are converted once into the cache. `build_dataset`
wraps torchvision's `CocoDetection` for transforms.v2 and returns model-ready items whose boxes
are cxcywh normalised to the transformed image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets, tv_tensors
from torchvision.datasets.vision import VisionDataset
from torchvision.transforms.v2 import functional as F

from dinokit.config import DataConfig
from dinokit.data import formats
from dinokit.data.shapes import cache_root, shapes_dir
from dinokit.data.transforms import box_cleanup, eval_transforms, train_transforms
from dinokit.data.validate import load_coco, read_coco_json
from dinokit.data.decode import UndecodableImage, check_images, decode_image
from dinokit.errors import DataError
from dinokit.files import declare_inputs, write_json

CONVERTER_VERSION = 3  # bump when formats.py changes its output: cached conversions are redone


@dataclass
class DataSource:
    """COCO JSON + image folder for each split, and the class list the model is built for.

    Contiguous class index i <-> COCO category id cat_ids[i] (categories sorted by id).
    """

    train_json: Path
    train_images: Path
    val_json: Path
    val_images: Path
    class_names: list[str]
    cat_ids: list[int]
    kind: str = "coco"  # shapes | coco | json | voc | yolo: where it came from, for messages
    test_json: Path | None = None  # a test split, when the dataset has one
    test_images: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)


# --------------------------------------------------------------------------- resolving --data


def resolve_source(cfg: DataConfig) -> DataSource:
    """Turn `cfg.data` ("shapes", a COCO/VOC/YOLO folder, a COCO JSON or a YOLO yaml) into a
    DataSource; its files join the running command's inputs (no output may replace them)."""
    source = _resolve(cfg)
    splits = (source.train_json, source.val_json, source.test_json)
    declare_inputs(source_files(source), once=("data", *splits))
    return source


def source_files(source: DataSource) -> Iterator[Path]:
    """The dataset's own files, lazily: each split's annotation JSON and the images it lists; for a
    converted VOC / YOLO dataset, its annotation files and images (the JSONs are the cache's)."""
    if source.kind in ("voc", "yolo"):
        yield from formats.source_files(source.train_images)
        return
    splits = [(source.train_json, source.train_images), (source.val_json, source.val_images)]
    if source.test_json is not None and source.test_images is not None:
        splits.append((source.test_json, source.test_images))
    for json_path, images in splits:
        yield json_path
        with contextlib.suppress(DataError):  # a broken file is reported by the reader, not here
            for image in read_coco_json(json_path)["images"]:
                yield images / str(image["file_name"])


def _resolve(cfg: DataConfig) -> DataSource:
    if cfg.data == "shapes":
        root = shapes_dir(cfg)
        ann = root / "annotations"
        return _source(ann / "instances_train.json", root / "train", ann / "instances_val.json", root / "val", "shapes")
    path = Path(cfg.data).expanduser()
    if not path.exists():
        raise DataError(f"data path does not exist: {path}")
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            return _converted(path, "yolo")
        if path.suffix.lower() != ".json":
            raise DataError(f"data file must be a COCO .json or a YOLO data.yaml, got {path}")
        images = guess_image_root(path, read_coco_json(path))
        return _source(path, images, path, images, "json")
    pair = _coco_folder(path)
    if pair is not None:
        (train_json, train_images), (val_json, val_images) = pair
        source = _source(train_json, train_images, val_json, val_images, "coco")
        tests = sorted((path / "annotations").glob("instances_test*.json"))
        if len(tests) == 1:
            tag = tests[0].stem[len("instances_"):]
            candidates = [path / tag, path / "images" / tag, path / "test", path / "images" / "test", path / "images", path]
            source.test_json = tests[0]
            source.test_images = guess_image_root(tests[0], read_coco_json(tests[0]), candidates)
        return source
    if formats.find_yolo_yaml(path) is not None:
        return _converted(path, "yolo")
    if formats.find_voc_xmls(path):
        return _converted(path, "voc")
    raise DataError(
        f"cannot tell the dataset format of {path}: expected annotations/instances_train*.json and "
        "instances_val*.json (COCO), data.yaml (YOLO), or Pascal VOC XML files anywhere below it"
    )


def _source(train_json: Path, train_images: Path, val_json: Path, val_images: Path, kind: str) -> DataSource:
    categories = sorted(read_coco_json(train_json)["categories"], key=lambda c: c["id"])
    return DataSource(train_json, train_images, val_json, val_images,
                      [str(c["name"]) for c in categories], [int(c["id"]) for c in categories], kind)


def same_images_note(source: DataSource) -> str | None:
    """A warning when training and validation read the same annotation file (a single COCO JSON
    as --data): the evaluations then score images the model trained on."""
    if source.train_json != source.val_json:
        return None
    count = len(read_coco_json(source.train_json)["images"])
    return (f"warning: {source.train_json.name} is both the training and the validation split: the same {count} "
            "images train and score the model (AP measures fit, not generalisation); give a COCO folder with "
            "instances_val*.json, or a VOC/YOLO folder, to hold images out")


def _coco_folder(root: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]] | None:
    """((train json, images), (val json, images)) of a COCO folder, or None if it is not one."""
    ann = root / "annotations"
    trains = sorted(ann.glob("instances_train*.json")) if ann.is_dir() else []
    if trains:
        vals = sorted(ann.glob("instances_val*.json"))
        if not vals:
            raise DataError(f"{ann} has {trains[0].name} but no instances_val*.json "
                            "(pass the train JSON itself with --data to use it for both)")
        pair = []
        for split, found in (("train", trains), ("val", vals)):
            exact = ann / f"instances_{split}.json"
            if exact in found:
                found = [exact]
            if len(found) > 1:
                raise DataError(f"several {split} annotation files in {ann}: "
                                f"{', '.join(p.name for p in found)} (pass one JSON with --data)")
            tag = found[0].stem[len("instances_"):]  # e.g. train2017
            candidates = [root / tag, root / "images" / tag, root / split, root / "images" / split,
                          root / "images", root]
            pair.append((found[0], guess_image_root(found[0], read_coco_json(found[0]), candidates)))
        return pair[0], pair[1]
    # Roboflow-style export: train/_annotations.coco.json, valid/_annotations.coco.json
    train = _one_json(root / "train")
    val = next((j for j in (_one_json(root / n) for n in ("val", "valid", "validation")) if j), None)
    if train and val:
        return (train, train.parent), (val, val.parent)
    return None


def _one_json(folder: Path) -> Path | None:
    found = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return found[0] if len(found) == 1 else None


def guess_image_root(json_path: Path, coco: Mapping[str, Any], candidates: list[Path] | None = None) -> Path:
    """The folder that the JSON's file_names are relative to: the first candidate holding them."""
    if candidates is None:
        here = json_path.parent
        candidates = [here, here / "images", here.parent / "images", here.parent]
    names = [img["file_name"] for img in coco["images"][:8]]
    for folder in candidates:
        if names and all((folder / n).is_file() for n in names):
            return folder
    for folder in candidates:  # some images missing: take the folder holding most of them
        if names and any((folder / n).is_file() for n in names):
            return folder
    return next((c for c in candidates if c.is_dir()), json_path.parent)


def _converted(src: Path, kind: Literal["voc", "yolo"]) -> DataSource:
    """Convert a VOC / YOLO dataset to COCO JSON once, into the cache, keyed by its content."""
    src = src.resolve()
    yaml_path = formats.find_yolo_yaml(src) if kind == "yolo" else None
    root = yaml_path.parent if yaml_path else src
    out = cache_root() / "converted" / f"{kind}-{root.name}-{_fingerprint(src, root)}"
    train_json, val_json, test_json = (out / f"instances_{s}.json" for s in ("train", "val", "test"))
    has_test = formats.has_test_split(src, kind)
    if not (train_json.is_file() and val_json.is_file() and (test_json.is_file() or not has_test)):
        convert = formats.voc_to_coco if kind == "voc" else formats.yolo_to_coco
        for split, path in (("train", train_json), ("val", val_json), ("test", test_json)):
            if split != "test" or has_test:
                try:
                    write_json(path, convert(src, split), indent=None)
                except OSError as exc:
                    raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    source = _source(train_json, root, val_json, root, kind)
    if has_test:
        source.test_json, source.test_images = test_json, root
    return source


def _fingerprint(src: Path, root: Path) -> str:
    """Hash of the dataset's path and its annotation files' names, sizes and mtimes."""
    digest = hashlib.sha1(f"{CONVERTER_VERSION}|{src}".encode())
    for pattern in ("*.yaml", "*.yml", "*.csv", "**/*.xml", "**/*.txt"):
        for p in sorted(root.glob(pattern)):
            st = p.stat()
            digest.update(f"|{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


# --------------------------------------------------------------------------- the dataset


class _BadImage(DataError):
    """An image that cannot be read; carries its path for `skip_bad_images`."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path


class _CocoImages(datasets.CocoDetection):
    """CocoDetection on an already validated COCO object, with RGB conversion and clear errors."""

    def __init__(self, root: Path, coco: COCO) -> None:
        VisionDataset.__init__(self, root)  # not CocoDetection.__init__: it would re-read the JSON
        self.coco = coco
        self.ids = sorted(coco.imgs.keys())
        self.truncated: set[str] = set()  # decoded as far as possible (per process with workers)

    def image_path(self, image_id: int) -> str:
        return os.path.join(self.root, self.coco.imgs[image_id]["file_name"])

    def _load_image(self, id: int) -> Image.Image:
        path = self.image_path(id)
        try:
            image, truncated = decode_image(path)  # a truncated file: decoded as far as it goes
        except UndecodableImage as exc:
            raise _BadImage(path, str(exc).split(": ", 1)[-1]) from None
        if truncated:
            self.truncated.add(path)
        return image

    def _load_target(self, id: int) -> list[Any]:
        # crowd regions stay in `coco` for evaluation but are not training targets (as in DETR)
        anns = [a for a in self.coco.imgToAnns[id] if not a.get("iscrowd", 0)]
        return [{**a, "bbox": [float(v) for v in a["bbox"]]} for a in anns]  # float boxes even if JSON has ints


class DetectionDataset(Dataset):
    """Item i: (image (3, H, W) float32 in [0, 1], target dict); see `build_dataset`."""

    def __init__(self, coco: COCO, ann_file: Path, images: Path, class_names: list[str], cat_ids: list[int],
                 transforms: Any, skip_bad_images: bool = False) -> None:
        self.coco = coco
        self.ann_file = Path(ann_file)
        self.images = Path(images)
        self.class_names = list(class_names)
        self.cat_ids = list(cat_ids)
        self.transforms = transforms
        self._cleanup = box_cleanup()
        self.skip_bad_images = skip_bad_images
        self.bad_images: set[str] = set()  # filled as bad images are met (per process with workers)
        self._base = _CocoImages(self.images, coco)
        self._wrapped = datasets.wrap_dataset_for_transforms_v2(self._base, target_keys={"image_id", "boxes", "labels"})
        self._label_of_cat = {c: i for i, c in enumerate(self.cat_ids)}  # COCO category id -> index

    @property
    def ids(self) -> list[int]:
        """COCO image ids in item order."""
        return self._base.ids

    def image_paths(self) -> list[str]:
        return [self._base.image_path(i) for i in self.ids]

    def drop_images(self, paths: set[str]) -> None:
        """Remove these images from the items and from the COCO ground truth alike, so that an
        evaluation neither scores a stand-in twice nor counts the dropped image's boxes as missed."""
        gone = {i for i in self.ids if self._base.image_path(i) in paths}
        if not gone:
            return
        self._base.ids = [i for i in self.ids if i not in gone]
        coco = self.coco
        coco.dataset["images"] = [img for img in coco.dataset["images"] if img["id"] not in gone]
        coco.dataset["annotations"] = [a for a in coco.dataset.get("annotations", []) if a["image_id"] not in gone]
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco.createIndex()

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for step in range(n):  # a bad image is replaced by the next good one: deterministic
            try:
                return self._item((index + step) % n)
            except _BadImage as exc:
                if not self.skip_bad_images:
                    raise
                self.bad_images.add(exc.path)
        raise DataError(f"no readable image among the {n} of {self.ann_file}")

    def _item(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        image, raw = self._wrapped[i]  # PIL RGB; {"image_id", "boxes": xyxy px, "labels": cat ids}
        w, h = image.size
        target: dict[str, Any] = {"image_id": int(raw["image_id"])}
        if "boxes" in raw:
            target["boxes"] = raw["boxes"]
            target["labels"] = torch.tensor([self._label_of_cat[int(c)] for c in raw["labels"]], dtype=torch.int64)
        else:  # no annotations: the wrapper gives only the id
            target["boxes"] = tv_tensors.BoundingBoxes(torch.zeros((0, 4)), format="XYXY", canvas_size=(h, w))
            target["labels"] = torch.zeros((0,), dtype=torch.int64)
        image, target = self._cleanup(*self.transforms(image, target))
        H, W = image.shape[-2:]
        boxes = F.convert_bounding_box_format(target["boxes"], new_format=tv_tensors.BoundingBoxFormat.CXCYWH)
        scale = torch.tensor([W, H, W, H], dtype=torch.float32)
        return image.as_subclass(Tensor), {
            "boxes": boxes.as_subclass(Tensor).float() / scale,  # (N, 4) cxcywh in [0, 1]
            "labels": target["labels"].as_subclass(Tensor).long(),  # (N,) in [0, C)
            "image_id": target["image_id"],
            "orig_size": torch.tensor([h, w], dtype=torch.int64),
            "size": torch.tensor([H, W], dtype=torch.int64),
        }


def preflight_images(sets: list[DetectionDataset], skip_bad_images: bool) -> str | None:
    """Decode every image of `sets` once (cached per dataset) before training: an undecodable one
    is a DataError unless `skip_bad_images` (then it is skipped); returns a warning line for
    truncated images (decoded as far as possible), or None when all is well."""
    paths = list(dict.fromkeys(p for ds in sets for p in ds.image_paths()))
    found = check_images(paths, cache_root() / "image-check")
    bad, truncated = found["bad"], found["truncated"]
    if bad and not skip_bad_images:
        first = next(iter(bad.values()))
        raise DataError(
            f"{len(bad)} image(s) cannot be decoded ({first}); fix or remove them, or pass --skip-bad-images"
        )
    for ds in sets:
        ds.bad_images.update(p for p in ds.image_paths() if p in bad)
        ds.drop_images(set(bad))
        if len(ds) == 0:
            raise DataError(f"no readable image among those of {ds.ann_file}")
    notes = []
    if truncated:
        notes.append(f"{len(truncated)} truncated image(s) decoded as far as the file allows (first: {next(iter(truncated))})")
    if bad:
        notes.append(f"{len(bad)} undecodable image(s) skipped (first: {next(iter(bad))})")
    return "warning: " + "; ".join(notes) if notes else None


def build_dataset(source: DataSource, cfg: DataConfig, split: Literal["train", "val", "test"], train: bool) -> DetectionDataset:
    """The `split` of `source`, with training (`train=True`) or evaluation transforms.

    Validates the annotations first: DataError names the file, annotation id and problem.
    """
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split '{split}' (train, val or test)")
    if split == "train":
        ann_file, images = source.train_json, source.train_images
    elif split == "val":
        ann_file, images = source.val_json, source.val_images
    elif source.test_json is not None and source.test_images is not None:
        ann_file, images = source.test_json, source.test_images
    else:
        raise DataError(f"{cfg.data} has no test split (COCO annotations/instances_test*.json, VOC "
                        "ImageSets/Main/test.txt, YOLO 'test:' in data.yaml)")
    coco = load_coco(ann_file, dict(zip(source.cat_ids, source.class_names)))
    if not coco.imgs:
        raise DataError(f"{ann_file} lists no images for the {split} split")
    transforms = train_transforms(cfg) if train else eval_transforms(cfg)
    return DetectionDataset(coco, ann_file, images, source.class_names, source.cat_ids, transforms, cfg.skip_bad_images)
