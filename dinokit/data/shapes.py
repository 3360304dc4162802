"""The built-in synthetic dataset: coloured shapes on textured backgrounds.

It is written once, as COCO JSON plus JPEG files, so it goes through exactly the same loader as a
user's COCO data. Everything is drawn from a seed, so the same arguments give the same bytes.

Class is shape, never colour: every object gets a random colour. Three look-alike pairs
(circle/ring, square/diamond, triangle/arrow) make the classifier look at shape; sizes go from
~8% to ~75% of the image side, with partial occlusion, so the task is neither trivial nor hopeless
for a tiny model trained for minutes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dinokit.config import DataConfig
from dinokit.errors import DataError

CLASSES: tuple[str, ...] = ("circle", "ring", "square", "diamond", "triangle", "arrow")
LOOK_ALIKES: tuple[tuple[str, str], ...] = (("circle", "ring"), ("square", "diamond"), ("triangle", "arrow"))
SHAPES_VERSION = 1  # bump when the drawing changes: cached folders of another version are rebuilt

MAX_OBJECTS = 15
MIN_REL_SIZE = 0.08  # smallest object side / image side (about 10 px at 128)
MAX_REL_SIZE = 0.75  # largest object side / image side
MAX_COVERED = 0.45  # an object's box may be hidden by later objects up to this fraction
SUPERSAMPLE = 2  # shapes are drawn at 2x and reduced, for anti-aliased edges
_SPLITS = ("train", "val")


def write_shapes(out: Path, train: int, val: int, size: int, seed: int) -> Path:
    """Write the dataset to `out` (annotations/instances_{train,val}.json, train/*.jpg, val/*.jpg).

    Built in a temporary folder next to `out` and renamed into place, so a reader never sees a
    half-written dataset. `out` must not exist or be an empty folder.
    """
    out = Path(out).expanduser()
    if train < 1 or val < 1:
        raise DataError(f"shapes needs at least one train and one val image, got train={train} val={val}")
    if size < 32:
        raise DataError(f"shapes image size must be >= 32 px, got {size}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"output folder already exists and is not empty: {out}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise DataError(f"cannot write the shapes dataset to {out}: {exc.strerror or exc}") from None
    try:
        (tmp / "annotations").mkdir()
        for split_index, (split, count) in enumerate(zip(_SPLITS, (train, val))):
            coco = _write_split(tmp / split, count, size, seed, split_index)
            coco["info"]["split"] = split
            text = json.dumps(coco, separators=(",", ":"))
            (tmp / "annotations" / f"instances_{split}.json").write_text(text)
        try:
            os.replace(tmp, out)  # atomic; works onto a missing or empty folder
        except OSError:
            raise DataError(f"output folder already exists and is not empty: {out}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def cache_root() -> Path:
    """Where dinokit keeps generated and converted data: $DINOKIT_CACHE or ~/.cache/dinokit."""
    return Path(os.environ.get("DINOKIT_CACHE") or "~/.cache/dinokit").expanduser()


def shapes_dir(cfg: DataConfig) -> Path:
    """The cached shapes folder for these settings, written on first use."""
    out = cache_root() / "shapes" / f"{cfg.shapes_train}-{cfg.shapes_val}-{cfg.shapes_size}-{cfg.shapes_seed}"
    if _is_current(out):
        return out
    if out.exists():  # an older generator's output (or something a user put there): set it aside
        stale = out.with_name(f".{out.name}.stale-{os.getpid()}")
        os.replace(out, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        return write_shapes(out, cfg.shapes_train, cfg.shapes_val, cfg.shapes_size, cfg.shapes_seed)
    except DataError:
        if _is_current(out):  # another process finished the same folder first
            return out
        raise


def _is_current(out: Path) -> bool:
    ann = out / "annotations" / "instances_val.json"
    try:
        with open(ann) as fh:
            info = json.load(fh).get("info", {})
    except (OSError, ValueError):
        return False
    return info.get("version") == SHAPES_VERSION and (out / "annotations" / "instances_train.json").is_file()


# --------------------------------------------------------------------------- one split


def _write_split(folder: Path, count: int, size: int, seed: int, split_index: int) -> dict[str, Any]:
    folder.mkdir()
    images, annotations = [], []
    for i in range(count):
        # one independent stream per (seed, split, image): a split's images do not depend on the
        # other split's size, and image i is the same whatever `count` is
        rng = np.random.default_rng([seed, split_index, i])
        picture, objects = _draw_image(rng, size)
        file_name = f"{i + 1:06d}.jpg"
        picture.save(folder / file_name, quality=90)
        images.append({"id": i + 1, "file_name": file_name, "width": size, "height": size})
        for label, (x0, y0, x1, y1) in objects:
            x, y, w, h = (round(v, 2) for v in (x0, y0, x1 - x0, y1 - y0))
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                "bbox": [x, y, w, h], "area": round(w * h, 2), "iscrowd": 0,
            })
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(CLASSES)]
    info = {"description": "dinokit synthetic shapes", "version": SHAPES_VERSION, "seed": seed, "size": size}
    return {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels


def _draw_image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[tuple[int, Box]]]:
    """One image and its objects as (class index, xyxy pixel box)."""
    background = _background(rng, size)  # (S, S, 3) float32 in [0, 255]
    canvas = Image.fromarray(background.clip(0, 255).astype(np.uint8))
    canvas = canvas.resize((size * SUPERSAMPLE,) * 2, Image.Resampling.NEAREST)  # smooth already
    draw = ImageDraw.Draw(canvas)

    n = 1 + int((MAX_OBJECTS - 1) * rng.random() ** 1.5 + 0.5)  # 1..15, few objects more often
    lo = MIN_REL_SIZE * size
    hi = max(lo * 1.5, size * min(MAX_REL_SIZE, 1.0 / math.sqrt(n)))  # crowded images: smaller objects
    placed: list[tuple[int, Box, np.ndarray]] = []
    covered: list[float] = []  # hidden area of each placed box (upper bound: sum of overlaps)
    for _ in range(n):
        label = int(rng.integers(len(CLASSES)))
        extent = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        verts = _shape_outline(rng, label, extent)  # (K, 2) around (0, 0), or None for round shapes
        w, h = (extent, extent) if verts is None else np.ptp(verts, axis=0).tolist()
        for _attempt in range(20):
            cx = rng.uniform(w / 2 + 1, size - w / 2 - 1) if w + 2 < size else size / 2
            cy = rng.uniform(h / 2 + 1, size - h / 2 - 1) if h + 2 < size else size / 2
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            overlaps = [_intersection(box, b) for _, b, _ in placed]
            if all((c + o) <= MAX_COVERED * _area(b) for (_, b, _), c, o in zip(placed, covered, overlaps)):
                break
        else:
            continue  # no room left for this object
        colour = _colour(rng, background, box, [c for (_, b, c), o in zip(placed, overlaps) if o > 0])
        _render(draw, rng, label, verts, (cx, cy), extent, colour)
        covered = [c + o for c, o in zip(covered, overlaps)] + [0.0]
        placed.append((label, box, colour))

    picture = np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32)
    amplitude = rng.uniform(6.0, 20.0)  # uniform pixel noise (cheaper than Gaussian, looks the same)
    picture = picture + amplitude * (2 * rng.random(picture.shape, dtype=np.float32) - 1)
    image = Image.fromarray(picture.clip(0, 255).astype(np.uint8))
    return image, [(label, box) for label, box, _ in placed]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour gradient plus stripes or blotches: (S, S, 3) float32."""
    grid = rng.uniform(30, 225, (3, 3, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BILINEAR), np.float32)
    kind = rng.integers(3)
    if kind == 1:  # stripes at a random angle and period
        angle, period = rng.uniform(0, math.pi), rng.uniform(size / 16, size / 4)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
        smooth += rng.uniform(10, 35) * wave[..., None]
    elif kind == 2:  # blotchy low-frequency noise
        cells = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        blot = np.asarray(Image.fromarray(cells).resize((size, size), Image.Resampling.BICUBIC), np.float32)
        smooth += rng.uniform(15, 40) / 128 * (blot - 128)
    return smooth


def _shape_outline(rng: np.random.Generator, label: int, extent: float) -> np.ndarray | None:
    """Polygon vertices (K, 2) centred on (0, 0) whose bounding box's longer side is `extent`."""
    name = CLASSES[label]
    if name in ("circle", "ring"):
        return None
    if name == "square":  # near axis-aligned, so it stays distinct from the diamond
        pts, angle = [(-1, -1), (1, -1), (1, 1), (-1, 1)], rng.uniform(-12, 12)
    elif name == "diamond":  # a rhombus standing on a corner, often narrower than tall
        half_w = rng.uniform(0.6, 1.0)
        pts, angle = [(0, -1), (half_w, 0), (0, 1), (-half_w, 0)], rng.uniform(-10, 10)
    elif name == "triangle":
        pts, angle = [(0, -1), (0.9, 0.75), (-0.9, 0.75)], rng.uniform(0, 360)
    else:  # arrow: a triangular head on a shaft
        head, shaft = rng.uniform(0.7, 0.95), rng.uniform(0.25, 0.4)
        pts = [(0, -1), (head, -0.1), (shaft, -0.1), (shaft, 1), (-shaft, 1), (-shaft, -0.1), (-head, -0.1)]
        angle = rng.uniform(0, 360)
    verts = np.asarray(pts, dtype=np.float64)
    t = math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    verts = verts @ rot.T
    return verts * (extent / np.ptp(verts, axis=0).max())


def _render(draw: ImageDraw.ImageDraw, rng: np.random.Generator, label: int, verts: np.ndarray | None,
            centre: tuple[float, float], extent: float, colour: np.ndarray) -> None:
    """Draw one shape on the supersampled canvas."""
    k = SUPERSAMPLE
    fill = tuple(int(c) for c in colour)
    cx, cy = centre[0] * k, centre[1] * k
    if verts is None:
        r = extent * k / 2
        if CLASSES[label] == "ring":  # hollow: the background shows through the middle
            width = max(2 * k, round(r * rng.uniform(0.25, 0.4)))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=int(width))
        else:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        return
    # the shape's box spans (ptp) its vertices; centre it on (cx, cy)
    mid = (verts.min(axis=0) + verts.max(axis=0)) / 2
    pts = [(cx + (x - mid[0]) * k, cy + (y - mid[1]) * k) for x, y in verts]
    draw.polygon(pts, fill=fill)


def _colour(rng: np.random.Generator, background: np.ndarray, box: Box, neighbours: list[np.ndarray]) -> np.ndarray:
    """A random colour that stands out from the background under the box and from overlapped objects."""
    x0, y0, x1, y1 = (int(v) for v in box)
    step = max(1, (x1 - x0) // 4)  # a sparse sample of the area is enough for its mean colour
    local = background[max(y0, 0):y1 + 1:step, max(x0, 0):x1 + 1:step].reshape(-1, 3).mean(axis=0)
    candidates = rng.integers(0, 256, (12, 3)).astype(np.float32)  # (12, 3)
    gaps = np.linalg.norm(candidates - local, axis=1)  # (12,)
    for other in neighbours:
        gaps = np.minimum(gaps, 1.5 * np.linalg.norm(candidates - other, axis=1))
    good = np.flatnonzero(gaps > 110)
    return candidates[good[0] if len(good) else int(gaps.argmax())]


def _area(b: Box) -> float:
    return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)


def _intersection(a: Box, b: Box) -> float:
    return max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
