"""COCO detection JSON: read it, check its structure and content, load it into pycocotools.

Shared by the dataset loader (fatal problems raise DataError) and `dinokit data check` (which
reports every problem instead).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from dinokit.errors import DataError

BOX_TOLERANCE = 1.0  # px a box may stick out of its image before it is reported


def read_coco_json(path: Path) -> dict[str, Any]:
    """Parse a COCO detection JSON and check its structure (DataError naming what is missing).

    Cached per (path, size, mtime): resolving a source and building its datasets read it once.
    Missing `area` / `iscrowd` / annotation `id` fields are filled in, as pycocotools needs them.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"annotation file does not exist: {path}") from None
    return _read_json_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_json_cached(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read annotation file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    _check_structure(data, path)
    return data


def _check_structure(data: Any, path: str) -> None:
    if not isinstance(data, dict):
        raise DataError(f"{path} is not COCO detection JSON: expected an object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{path} is not COCO detection JSON: missing '{key}'")
        if not isinstance(data[key], list):
            raise DataError(f"{path} is not COCO detection JSON: '{key}' must be a list")
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("id"), int) or not img.get("file_name"):
            raise DataError(f"{path}: images[{k}] needs an integer 'id' and a 'file_name'")
    if not data["categories"]:
        raise DataError(f"{path} is not COCO detection JSON: 'categories' is empty")
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            raise DataError(f"{path}: categories[{k}] needs an integer 'id' and a 'name'")
    next_id = 1 + max((a["id"] for a in data["annotations"] if isinstance(a, dict) and isinstance(a.get("id"), int)),
                      default=0)
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotations[{k}] is not an object")
        if not isinstance(ann.get("id"), int):
            ann["id"], next_id = next_id, next_id + 1
        name = f"{path}: annotation {ann['id']}"
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                raise DataError(f"{name} has no '{key}'")
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise DataError(f"{name}: 'bbox' must be 4 numbers [x, y, w, h], got {box!r}")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(box[2]) * float(box[3]))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Problem:
    """One content problem of a COCO dict; `fatal` ones make loading fail."""

    kind: str  # e.g. "negative box size": the row of `dinokit data check`
    fatal: bool
    where: str  # e.g. "annotation 12"
    detail: str


def coco_problems(data: Mapping[str, Any], categories: Mapping[int, str] | None = None) -> Iterator[Problem]:
    """Content problems of a structurally valid COCO dict, in file order.

    `categories` ({id: name}) are the training categories the model knows; default: the file's own.
    """
    own = {c["id"]: str(c["name"]) for c in data["categories"]}
    known = dict(categories) if categories is not None else own
    for cid, name in own.items():
        if cid in known and known[cid] != name:
            yield Problem("category differs from train", True, f"category {cid}",
                          f"'{name}' here, '{known[cid]}' in the training annotations")
    sizes: dict[int, tuple[float, float]] = {}
    for img in data["images"]:
        if img["id"] in sizes:
            yield Problem("duplicate image id", True, f"image {img['id']}", f"file {img['file_name']}")
        sizes[img["id"]] = (float(img.get("width") or 0), float(img.get("height") or 0))
    seen: set[int] = set()
    for ann in data["annotations"]:
        where = f"annotation {ann['id']}"
        if ann["id"] in seen:
            yield Problem("duplicate annotation id", True, where, f"image {ann['image_id']}")
        seen.add(ann["id"])
        if ann["image_id"] not in sizes:
            yield Problem("unknown image id", True, where, f"image_id {ann['image_id']} is not in 'images'")
        if ann["category_id"] not in known:
            yield Problem("unknown category id", True, where,
                          f"category_id {ann['category_id']} is not in 'categories'")
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w < 0 or h < 0:
            yield Problem("negative box size", True, where, f"bbox {ann['bbox']} has width or height < 0")
        elif w == 0 or h == 0:
            yield Problem("zero-size box", False, where, f"bbox {ann['bbox']} (dropped when loading)")
        width, height = sizes.get(ann["image_id"], (0.0, 0.0))
        t = BOX_TOLERANCE
        if width and height and (x < -t or y < -t or x + w > width + t or y + h > height + t):
            yield Problem("box outside image", False, where,
                          f"bbox {ann['bbox']} vs image {width:g}x{height:g} (clipped when loading)")


def load_coco(path: Path, categories: Mapping[int, str] | None = None) -> COCO:
    """A validated pycocotools COCO object; the first fatal problem raises DataError."""
    data = read_coco_json(path)
    for problem in coco_problems(data, categories):
        if problem.fatal:
            raise DataError(f"{path}: {problem.where}: {problem.kind} ({problem.detail})")
    coco = COCO()
    coco.dataset = data
    lowest = min((a["id"] for a in data["annotations"]), default=1)
    if lowest <= 0:  # COCOeval reads a match to annotation id 0 as "no match": every such TP would be an FP
        coco.dataset = {**data, "annotations": [{**a, "id": a["id"] + 1 - lowest} for a in data["annotations"]]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco
