"""Pascal VOC XML and YOLO txt annotations -> COCO JSON dicts.

Converting once to COCO lets every format go through the one COCO loader and evaluator. In the
returned dicts, `file_name` is relative to the dataset folder `src` (or absolute for an image
outside it); `relocate` rewrites them for a JSON written somewhere else. Category ids are 1..K in
the order of the class names, and the same for every split of one dataset.
"""

from __future__ import annotations

import csv
import os
import random
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from dinokit.errors import DataError
from dinokit.yamlfile import read_mapping

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val")
VAL_FRACTION = 0.2  # held out when a VOC folder has no split lists


# --------------------------------------------------------------------------- VOC


def voc_to_coco(src: Path, split: str | None, seed: int = 0) -> dict[str, Any]:
    """A VOC folder -> COCO dict for `split` ("train", "val", or None for every image).

    Any layout: the VOC XML files anywhere below `src` (`Annotations/`, next to the images, or
    in folders of any name), and each XML's image anywhere below `src`, found by its <filename>
    or else by the XML's stem (the candidate nearest to the XML when several share the name).
    Split lists: `ImageSets/Main/{train,val}.txt` (anywhere below `src`), or CSV files such as
    `train_labels.csv` / `test_labels.csv` with a `filename` column; without them a seeded 80/20 split.
    """
    src = Path(src)
    if split is not None:
        _check_split(split)
    xmls = find_voc_xmls(src)
    if not xmls:
        raise DataError(f"no Pascal VOC XML files (<annotation> root) anywhere below {src}")
    records = [_read_voc_xml(x) for x in xmls]
    names = sorted({obj[0] for rec in records for obj in rec["objects"]})
    cat_id = {name: k + 1 for k, name in enumerate(names)}

    if split is not None:
        lists = voc_split_lists(src)
        if lists is None:  # seeded split of the sorted stems: stable across runs and machines
            stems = sorted({r["stem"] for r in records})
            random.Random(seed).shuffle(stems)
            n_val = max(1, round(VAL_FRACTION * len(stems))) if len(stems) > 1 else 0
            lists = {"val": set(stems[:n_val]), "train": set(stems[n_val:])}
        if split not in lists:
            raise DataError(f"{src} has no ImageSets/Main/{split}.txt")
        records = [r for r in records if r["stem"] in lists[split]]

    index = _image_index(src)
    images, annotations = [], []
    for image_id, rec in enumerate(records, start=1):
        path = _find_image(index, rec, src)
        width, height = _image_size(path) or (rec["width"], rec["height"])
        if not width or not height:
            raise DataError(f"{rec['xml']}: no <size> and no readable image {path}")
        images.append({"id": image_id, "file_name": _relative(path, src), "width": width, "height": height})
        for name, (x0, y0, x1, y1), difficult in rec["objects"]:
            w, h = x1 - x0, y1 - y0
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id[name],
                "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0, "difficult": difficult,
            })
    return _coco(images, annotations, names, f"converted from Pascal VOC {src}")


def find_voc_xmls(src: Path) -> list[Path]:
    """Every VOC annotation below `src` (sorted). An XML file with another root element is skipped,
    unless it sits in an Annotations/ folder (then it is an error there); broken XML is an error."""
    found = []
    for path in sorted(Path(src).rglob("*.xml")):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.parent.name.lower() == "annotations" or _has_annotation_root(path):
            found.append(path)
    return found


def _has_annotation_root(path: Path) -> bool:
    """Whether the file's root element is <annotation> (reads only up to the first element)."""
    try:
        for _, element in ET.iterparse(path, events=("start",)):
            return element.tag == "annotation"
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"cannot parse VOC XML {path}: {exc}") from None
    return False


def voc_split_lists(src: Path) -> dict[str, set[str]] | None:
    """The author's split as {"train": stems, "val": stems} (and "test" when ImageSets/Main/test.txt
    exists), or None if the folder has none."""
    mains = [p.parent for p in sorted(Path(src).rglob("ImageSets/Main/train.txt"))]
    main = next((m for m in mains if (m / "val.txt").is_file()), src / "ImageSets" / "Main")
    if (main / "train.txt").is_file() and (main / "val.txt").is_file():
        splits = [*SPLITS, "test"] if (main / "test.txt").is_file() else SPLITS
        return {s: {line.split()[0] for line in (main / f"{s}.txt").read_text().splitlines() if line.strip()}
                for s in splits}
    csvs = {p.stem.lower(): p for p in src.glob("*.csv")}
    train = next((p for k, p in sorted(csvs.items()) if "train" in k), None)
    val = next((p for k, p in sorted(csvs.items()) if "val" in k or "test" in k), None)
    if train and val:
        return {"train": _csv_stems(train), "val": _csv_stems(val)}
    return None


def _csv_stems(path: Path) -> set[str]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split list {path}: {exc}") from None
    if not rows or not any(k in rows[0] for k in ("filename", "file_name", "image")):
        raise DataError(f"split list {path} has no 'filename' column")
    key = next(k for k in ("filename", "file_name", "image") if k in rows[0])
    return {Path(r[key]).stem for r in rows if r.get(key)}


def _read_voc_xml(path: Path) -> dict[str, Any]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"cannot parse VOC XML {path}: {exc}") from None
    if root.tag != "annotation":
        raise DataError(f"{path} is not a VOC annotation (root element <{root.tag}>, expected <annotation>)")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise DataError(f"{path}: object {k} has no <name> or no <bndbox>")
        try:
            x0, y0, x1, y1 = (float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise DataError(f"{path}: object {k} ('{name}') has a missing or non-numeric box coordinate") from None
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append((name, (x0, y0, x1, y1), int(difficult)))
    return {
        "xml": path, "stem": path.stem, "filename": (root.findtext("filename") or "").strip(),
        "width": _int(root.findtext("size/width")), "height": _int(root.findtext("size/height")),
        "objects": objects,
    }


def _image_index(src: Path) -> dict[str, list[Path]]:
    """Image files below `src` by lower-case file name and by lower-case stem (key "stem:...")."""
    index: dict[str, list[Path]] = {}
    for path in sorted(Path(src).rglob("*")):
        if path.suffix.lower() in IMAGE_EXTS and not path.name.startswith(".") and path.is_file():
            index.setdefault(path.name.lower(), []).append(path)
            index.setdefault(f"stem:{path.stem.lower()}", []).append(path)
    return index


ANNOTATION_EXTS = (".xml", ".txt", ".yaml", ".yml", ".csv")  # VOC XML, YOLO labels and data.yaml, split lists


def source_files(root: Path) -> Iterator[Path]:
    """Every file of a VOC / YOLO dataset below `root` that a conversion reads (annotations, split
    lists, images), lazily: the inputs that no output may replace."""
    for path in Path(root).rglob("*"):
        if path.suffix.lower() in IMAGE_EXTS + ANNOTATION_EXTS and path.is_file():
            yield path


def _find_image(index: dict[str, list[Path]], rec: dict[str, Any], src: Path) -> Path:
    """The image of an XML record: its <filename>, else an image with the XML's stem; the one
    nearest to the XML file when several match. A missing one is reported when loading / checking."""
    xml: Path = rec["xml"]
    filename = Path(rec["filename"].replace("\\", "/")).name if rec["filename"] else ""
    for key in ([filename.lower()] if filename else []) + [f"stem:{rec['stem'].lower()}"]:
        matches = index.get(key, [])
        if matches:
            return max(matches, key=lambda p: (_shared_depth(p, xml), -len(p.parts)))
    return xml.parent / (filename or f"{rec['stem']}.jpg")


def _shared_depth(a: Path, b: Path) -> int:
    """How many leading folders two paths share."""
    n = 0
    for x, y in zip(a.parent.parts, b.parent.parts):
        if x != y:
            break
        n += 1
    return n


# --------------------------------------------------------------------------- YOLO


def yolo_to_coco(src: Path, split: str | None) -> dict[str, Any]:
    """A YOLO dataset (folder with data.yaml, or the yaml file) -> COCO dict for `split`.

    data.yaml gives `names` (list or {index: name}) and `train` / `val` image folders, image
    lists (.txt) or lists of those, relative to `path` (if given) or to the yaml's folder. Labels
    live in the sibling `labels/` folder: one `class cx cy w h` line per box, normalised to [0, 1].
    """
    yaml_path = find_yolo_yaml(Path(src))
    if yaml_path is None:
        raise DataError(f"no data.yaml in {src}")
    spec = read_mapping(yaml_path, "YOLO dataset file", DataError, "a mapping with names, train and val")
    names = _yolo_names(spec, yaml_path)
    root = yaml_path.parent
    if spec.get("path"):
        base = Path(str(spec["path"])).expanduser()
        root_for_entries = base if base.is_absolute() else (yaml_path.parent / base)
    else:
        root_for_entries = yaml_path.parent
    splits = list(SPLITS) if split is None else [split]
    if split is not None and split not in ("train", "val", "test"):
        raise DataError(f"unknown split '{split}' (train, val or test)")

    images, annotations = [], []
    for s in splits:
        if not spec.get(s):
            raise DataError(f"{yaml_path} has no '{s}' entry")
        for img in _yolo_images(spec[s], root_for_entries, yaml_path, s):
            size = _image_size(img)
            image_id = len(images) + 1
            if size is None:  # unreadable: keep the entry, the loader / checker reports it
                images.append({"id": image_id, "file_name": _relative(img, root), "width": 0, "height": 0})
                continue
            width, height = size
            images.append({"id": image_id, "file_name": _relative(img, root), "width": width, "height": height,
                           "label_file": _label_path(img).is_file()})  # without one: a background image
            for cls, (cx, cy, w, h) in _yolo_labels(_label_path(img), len(names)):
                bw, bh = w * width, h * height
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                    "bbox": [(cx - w / 2) * width, (cy - h / 2) * height, bw, bh],
                    "area": bw * bh, "iscrowd": 0,
                })
    return _coco(images, annotations, names, f"converted from YOLO {yaml_path}")


def find_yolo_yaml(src: Path) -> Path | None:
    """data.yaml (or the one *.yaml with `names`) in `src`, or `src` itself if it is a yaml file."""
    if src.is_file():
        return src if src.suffix in (".yaml", ".yml") else None
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (src / name).is_file():
            return src / name
    return None


def _yolo_names(spec: dict[str, Any], path: Path) -> list[str]:
    names = spec.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DataError(f"{path}: 'names' keys must be class indices 0..N-1") from None
        if keys != list(range(len(keys))):
            raise DataError(f"{path}: 'names' keys must be 0..{len(keys) - 1}, got {keys}")
        names = [names[k] if k in names else names[str(k)] for k in keys]
    if not isinstance(names, list) or not names:
        raise DataError(f"{path} has no 'names' list of class names")
    return [str(n) for n in names]


def _yolo_images(entry: Any, root: Path, yaml_path: Path, split: str) -> list[Path]:
    """Every image of a train/val entry: a folder, a .txt list of images, or a list of those."""
    out: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        path = _resolve_entry(str(item), root)
        if path is None:
            raise DataError(f"{yaml_path}: '{split}' path does not exist: {item}")
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        else:  # a text file listing images, relative to the list's folder or the root
            for line in path.read_text().splitlines():
                if line.strip():
                    p = Path(line.strip())
                    out.append(p if p.is_absolute() else _resolve_entry(line.strip(), path.parent) or root / p)
    return out


def _resolve_entry(item: str, root: Path) -> Path | None:
    """A yaml path, tolerating the common '../train/images' that really means 'train/images'."""
    candidates = [root / item]
    stripped = item
    while stripped.startswith("../"):
        stripped = stripped[3:]
        candidates.append(root / stripped)
    if item.startswith("./"):
        candidates.append(root / item[2:])
    return next((c for c in candidates if c.exists()), None)


def _label_path(image: Path) -> Path:
    """images/.../a.jpg -> labels/.../a.txt (the last 'images' folder in the path)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _yolo_labels(path: Path, num_classes: int) -> list[tuple[int, tuple[float, float, float, float]]]:
    """(class, normalised cxcywh) per line; a polygon line becomes its bounding box."""
    if not path.is_file():
        return []  # an image without a label file has no objects
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        try:
            cls, nums = int(values[0]), [float(v) for v in values[1:]]
        except ValueError:
            raise DataError(f"{path} line {n}: expected 'class cx cy w h' numbers, got '{line.strip()}'") from None
        if not 0 <= cls < num_classes:
            raise DataError(f"{path} line {n}: class {cls} is not in 0..{num_classes - 1} (data.yaml names)")
        if len(nums) == 4:
            out.append((cls, (nums[0], nums[1], nums[2], nums[3])))
        elif len(nums) >= 6 and len(nums) % 2 == 0:  # segment polygon x1 y1 x2 y2 ...
            xs, ys = nums[0::2], nums[1::2]
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            out.append((cls, ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)))
        else:
            raise DataError(f"{path} line {n}: expected 'class cx cy w h', got {len(values)} values")
    return out


# --------------------------------------------------------------------------- shared helpers


def relocate(coco: dict[str, Any], old_root: Path, new_root: Path) -> dict[str, Any]:
    """Rewrite relative file_names so they resolve from `new_root` instead of `old_root`."""
    old_root, new_root = Path(old_root).resolve(), Path(new_root).resolve()
    for img in coco["images"]:
        name = Path(img["file_name"])
        if not name.is_absolute():
            img["file_name"] = os.path.relpath(old_root / name, new_root)
    return coco


def _coco(images: list[dict], annotations: list[dict], names: list[str], description: str) -> dict[str, Any]:
    categories = [{"id": k + 1, "name": name, "supercategory": "object"} for k, name in enumerate(names)]
    return {"info": {"description": description}, "licenses": [], "images": images,
            "annotations": annotations, "categories": categories}


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header, or None if it cannot be read."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _int(text: str | None) -> int:
    try:
        return int(float(text)) if text else 0
    except ValueError:
        return 0


def _check_split(split: str) -> None:
    if split not in (*SPLITS, "test"):
        raise DataError(f"unknown split '{split}' (train, val or test)")


def has_test_split(src: Path, kind: str) -> bool:
    """Whether a VOC folder (ImageSets/Main/test.txt) or a YOLO data.yaml ('test:') has a test split."""
    if kind == "voc":
        lists = voc_split_lists(src)
        return lists is not None and "test" in lists
    yaml_path = find_yolo_yaml(Path(src))
    spec = read_mapping(yaml_path, "YOLO dataset file", DataError, "a mapping") if yaml_path else {}
    return bool(spec.get("test"))
