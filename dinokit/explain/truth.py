"""Ground truth for the denoising figure: from a dataset (`--data DIR --image-id ID`) or a JSON
file of boxes (`--boxes FILE`). Boxes come back xyxy in pixels of the original image, labels as
the detector's class indices (matched by class name)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from dinokit.config import Config
from dinokit.errors import DataError


@dataclasses.dataclass
class Truth:
    boxes: np.ndarray  # (G, 4) xyxy pixels of the original image
    labels: np.ndarray  # (G,) detector class indices


def class_index(label: Any, class_names: list[str], where: str) -> int:
    """A class name (or an index into the detector's classes) -> the detector's class index."""
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise DataError(f"{where}: a label must be a class name or index, got {label!r}")
    if isinstance(label, int):
        if not 0 <= label < len(class_names):
            raise DataError(f"{where}: class index {label} is outside the detector's {len(class_names)} classes")
        return label
    if label not in class_names:
        shown = ", ".join(class_names[:8]) + (", ..." if len(class_names) > 8 else "")
        raise DataError(f"{where}: class '{label}' is not one of the detector's classes ({shown})")
    return class_names.index(label)


def truth_from_json(path: str | Path, class_names: list[str], image_name: str | None = None) -> Truth:
    """Boxes from a JSON file: a list of {"box": [x0, y0, x1, y1], "label": name}, or the record
    `dinokit predict` writes for an image ({"file", "detections": [...]}; from a list of such
    records, the one whose file has the image's name)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"boxes file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read boxes file {path}: {exc}") from None
    records = payload if isinstance(payload, list) else [payload]
    if records and all(isinstance(r, dict) and "detections" in r for r in records):
        if len(records) > 1:
            records = [r for r in records if image_name is not None and Path(str(r.get("file", ""))).name == image_name]
            if len(records) != 1:
                raise DataError(f"{path} holds several images' records and none (or several) for {image_name}")
        records = records[0]["detections"]
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list of boxes")
    return truth_from_records(records, class_names, str(path))


def truth_from_records(records: list[Any], class_names: list[str], where_from: str) -> Truth:
    """[{"box": [x0, y0, x1, y1] pixels, "label": name or index}, ...] -> Truth."""
    boxes, labels = [], []
    for i, item in enumerate(records):
        where = f"{where_from}: box {i}"
        box = item.get("box") if isinstance(item, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise DataError(f"{where}: expected {{\"box\": [x0, y0, x1, y1], \"label\": name}}, got {item!r}")
        if not (box[2] > box[0] and box[3] > box[1]):
            raise DataError(f"{where}: box {box} has no area (x1 > x0 and y1 > y0 needed)")
        boxes.append([float(v) for v in box])
        labels.append(class_index(item.get("label"), class_names, where))
    return Truth(np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64))


def truth_from_data(data: str, image_id: str, cfg: Config, class_names: list[str]) -> tuple[Path, Truth]:
    """The image file and ground truth of `image_id` (a COCO image id or a file name) in the
    dataset `data` (any format `--data` takes), looked up in its validation, then training split."""
    from dinokit.data.coco import resolve_source
    from dinokit.data.validate import load_coco

    source = resolve_source(dataclasses.replace(cfg.data, data=data))
    names = dict(zip(source.cat_ids, source.class_names))
    for ann_file, images in ((source.val_json, source.val_images), (source.train_json, source.train_images)):
        coco = load_coco(ann_file, names)
        found = [i for i, img in coco.imgs.items()
                 if str(i) == str(image_id) or Path(str(img["file_name"])).name == str(image_id)]
        if not found:
            continue
        record = coco.imgs[found[0]]
        anns = [a for a in coco.imgToAnns[found[0]] if not a.get("iscrowd", 0)]
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        where = f"{ann_file}: image {image_id}"
        labels = [class_index(names[int(a["category_id"])], class_names, where) for a in anns]
        truth = Truth(np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64))
        return Path(images) / str(record["file_name"]), truth
    raise DataError(f"image '{image_id}' is not in {data} (give a COCO image id or a file name)")
