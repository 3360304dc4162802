"""`dinokit data check`: find everything wrong with a dataset at once, before training on it.

Loading stops at the first fatal problem; the check reports them all, with counts and the first
offenders. It raises only when the data cannot be found or parsed at all.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from dinokit.config import DataConfig
from dinokit.data.coco import resolve_source, same_images_note
from dinokit.data.decode import DECODE_THREADS, UndecodableImage, decode_image
from dinokit.files import json_safe
from dinokit.data.stats import ClassStats, background_images, label_stats, plot_labels
from dinokit.data.validate import coco_problems, read_coco_json

EXAMPLES = 5  # offenders listed per problem
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"
TRUNCATED_IMAGE = "truncated image (decoded as far as the file allows)"
SIZE_MISMATCH = "image size differs from JSON"
NO_ANNOTATIONS = "images without annotations"
NO_LABEL_FILE = "images without a label file (YOLO; background)"


@dataclass
class Finding:
    """One kind of problem in one split: how often, how bad, and where first."""

    kind: str
    fatal: bool
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)


@dataclass
class SplitReport:
    split: str  # "train", "val", or "train+val" when both use the same file
    ann_file: Path
    images_dir: Path
    num_images: int = 0
    num_annotations: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    findings: dict[str, Finding] = field(default_factory=dict)
    class_stats: dict[str, ClassStats] = field(default_factory=dict)  # instances, images, median box
    background: int = 0  # images without any box: negatives in training, counted in evaluation

    def note(self, kind: str, fatal: bool, example: str) -> None:
        self.findings.setdefault(kind, Finding(kind, fatal)).add(example)

    @property
    def fatal(self) -> bool:
        return any(f.fatal for f in self.findings.values())


@dataclass
class CheckReport:
    data: str
    kind: str
    class_names: list[str]
    splits: list[SplitReport]
    note: str | None = None  # e.g. one JSON for both splits

    @property
    def fatal(self) -> bool:
        """True when training or evaluation on this data would fail."""
        return any(s.fatal for s in self.splits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data, "kind": self.kind, "classes": self.class_names, "fatal": self.fatal, "note": self.note,
            "splits": [{
                "split": s.split, "ann_file": str(s.ann_file), "images_dir": str(s.images_dir),
                "images": s.num_images, "annotations": s.num_annotations, "per_class": s.per_class,
                "background_images": s.background, "class_stats": json_safe({k: vars(v) for k, v in s.class_stats.items()}),  # NaN -> null
                "findings": [vars(f) for f in s.findings.values()],
            } for s in self.splits],
        }


def check_data(cfg_or_path: DataConfig | str | Path, read_images: bool = True) -> CheckReport:
    """Check every split of a dataset (what `--data` accepts). `read_images=False` only stats files."""
    cfg = _config(cfg_or_path)
    source = resolve_source(cfg)
    known = dict(zip(source.cat_ids, source.class_names))
    splits = [("train", source.train_json, source.train_images), ("val", source.val_json, source.val_images)]
    if (source.train_json, source.train_images) == (source.val_json, source.val_images):
        splits = [("train+val", source.train_json, source.train_images)]
    reports = [_check_split(name, ann, images, known, read_images) for name, ann, images in splits]
    return CheckReport(cfg.data, source.kind, source.class_names, reports, same_images_note(source))


def _check_split(split: str, ann_file: Path, images_dir: Path, known: dict[int, str], read_images: bool) -> SplitReport:
    data = read_coco_json(ann_file)
    report = SplitReport(split, ann_file, images_dir, len(data["images"]), len(data["annotations"]))
    for p in coco_problems(data, known):
        report.note(p.kind, p.fatal, f"{p.where}: {p.detail}")

    counts = Counter(a["category_id"] for a in data["annotations"])
    report.per_class = {name: counts.get(cid, 0) for cid, name in known.items()}
    report.class_stats = label_stats(data, known)
    background = background_images(data)
    report.background = len(background)
    for img in background:
        report.note(NO_ANNOTATIONS, False, f"image {img['id']} ({img['file_name']})")
        if img.get("label_file") is False:  # written by the YOLO converter
            report.note(NO_LABEL_FILE, False, f"image {img['id']} ({img['file_name']})")

    def inspect(img: dict[str, Any]) -> tuple[dict[str, Any], str | None, tuple[int, int] | None]:
        return img, *_inspect_image(images_dir / img["file_name"], read_images)

    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for img, error, size in pool.map(inspect, data["images"]):
            where = f"image {img['id']} ({images_dir / img['file_name']})"
            if error == "file not found":
                report.note(MISSING_IMAGE, True, where)
            elif error == TRUNCATED_IMAGE:
                report.note(TRUNCATED_IMAGE, False, where)
            elif error is not None:
                report.note(UNREADABLE_IMAGE, True, f"{where}: {error}")
            elif size and img.get("width") and img.get("height") and size != (img["width"], img["height"]):
                report.note(SIZE_MISMATCH, False,
                            f"{where}: file is {size[0]}x{size[1]}, JSON says {img['width']}x{img['height']}")
    return report


def write_label_plots(cfg_or_path: DataConfig | str | Path, report: CheckReport, out: Path) -> list[Path]:
    """labels.png of the training split (labels_val.png of the validation one) into `out`."""
    known = dict(zip(resolve_source(_config(cfg_or_path)).cat_ids, report.class_names))
    paths = []
    for split in report.splits:
        name = "labels.png" if split.split.startswith("train") else f"labels_{split.split}.png"
        title = f"{report.data}: {split.split}, {split.num_images} images, {split.num_annotations} boxes"
        paths.append(plot_labels(read_coco_json(split.ann_file), known, out / name, title))
    return paths


def _config(cfg_or_path: DataConfig | str | Path) -> DataConfig:
    return cfg_or_path if isinstance(cfg_or_path, DataConfig) else DataConfig(data=str(cfg_or_path))


def _inspect_image(path: Path, decode: bool) -> tuple[str | None, tuple[int, int] | None]:
    """(error or None, (width, height) or None) for one image file."""
    if not path.is_file():
        return "file not found", None
    if decode:  # a truncated or corrupt file fails only when decoded
        try:
            image, truncated = decode_image(path)
        except UndecodableImage as exc:
            return str(exc).split(": ", 1)[-1], None
        return (TRUNCATED_IMAGE if truncated else None), image.size
    try:
        with Image.open(path) as im:
            return None, im.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return str(exc) or type(exc).__name__, None

