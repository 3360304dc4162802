"""Label statistics of a COCO dict: per class the instances, the images holding them and the
median box size, the background images, and `labels.png` (class counts, box centres, box widths
and heights): what a practitioner looks at first, before training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dinokit.files import write_with


@dataclass
class ClassStats:
    instances: int  # boxes of the class (crowd regions left out)
    images: int  # images with at least one such box
    median_width: float  # pixels; NaN without boxes
    median_height: float


def label_stats(data: Mapping[str, Any], classes: Mapping[int, str]) -> dict[str, ClassStats]:
    """{class name: ClassStats} for the categories `classes` ({id: name}), in that order."""
    boxes: dict[int, list[tuple[float, float]]] = {c: [] for c in classes}
    images: dict[int, set[int]] = {c: set() for c in classes}
    for a in data["annotations"]:
        if a["category_id"] in boxes and not a.get("iscrowd", 0):
            boxes[a["category_id"]].append((float(a["bbox"][2]), float(a["bbox"][3])))
            images[a["category_id"]].add(a["image_id"])
    out = {}
    for cat_id, name in classes.items():
        sizes = np.array(boxes[cat_id]).reshape(-1, 2)  # (N, 2) w, h px
        median = np.median(sizes, axis=0) if len(sizes) else np.array([np.nan, np.nan])
        out[name] = ClassStats(len(sizes), len(images[cat_id]), float(median[0]), float(median[1]))
    return out


def background_images(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The image records without any annotation: trained on as negatives and evaluated."""
    annotated = {a["image_id"] for a in data["annotations"]}
    return [img for img in data["images"] if img["id"] not in annotated]


def _normalised_boxes(data: Mapping[str, Any]) -> np.ndarray:
    """(N, 4) cx, cy, w, h of every non-crowd box, divided by its image's width / height (images
    without a size in the JSON are left out)."""
    sizes = {img["id"]: (float(img.get("width") or 0), float(img.get("height") or 0)) for img in data["images"]}
    rows = []
    for a in data["annotations"]:
        width, height = sizes.get(a["image_id"], (0.0, 0.0))
        if a.get("iscrowd", 0) or not width or not height:
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        rows.append(((x + w / 2) / width, (y + h / 2) / height, w / width, h / height))
    return np.array(rows).reshape(-1, 4)


def plot_labels(data: Mapping[str, Any], classes: Mapping[int, str], path: str | Path, title: str = "") -> Path:
    """labels.png: instances per class (bars), box centres and box width / height (both as a
    fraction of the image), each box one translucent dot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stats = label_stats(data, classes)
    boxes = _normalised_boxes(data)
    fig = Figure(figsize=(15, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_count, ax_centre, ax_size = fig.subplots(1, 3)
    names = list(stats)
    ax_count.bar(range(len(names)), [s.instances for s in stats.values()], color="tab:blue")
    ax_count.set_xticks(range(len(names)), names, rotation=90 if len(names) > 6 else 0, fontsize="small")
    ax_count.set(title=f"instances per class ({len(background_images(data))} background images)", ylabel="instances")
    alpha = float(np.clip(20.0 / max(1, len(boxes)) ** 0.5, 0.05, 0.8))
    ax_centre.scatter(boxes[:, 0], boxes[:, 1], s=6, alpha=alpha, color="tab:blue", linewidths=0)
    ax_centre.set(title="box centres", xlabel="x / image width", ylabel="y / image height", xlim=(0, 1), ylim=(1, 0))
    ax_size.scatter(boxes[:, 2], boxes[:, 3], s=6, alpha=alpha, color="tab:blue", linewidths=0)
    ax_size.set(title="box sizes", xlabel="width / image width", ylabel="height / image height",
                xlim=(0, 1.02), ylim=(0, 1.02))
    for ax in (ax_centre, ax_size):
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
