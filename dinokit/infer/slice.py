"""Sliced (tiled) inference for objects that are small against the image (SAHI).

The image is cut into overlapping square tiles of `tile` pixels; each tile goes through the usual
predictor at the model's own size (so a small object is shrunk far less than when the whole image
is resized), the tiles' boxes are moved back to the image's pixels and merged across tile
overlaps, class by class. The cutting, moving and merging are supervision's `InferenceSlicer`
(extra `[slice]`): it takes any detector behind a callback, batches tiles, and merges with NMS or
box fusion (non-max merge), per class, by IoU or by intersection over the smaller box. (sahi does
the same but wants a model wrapped in its own `DetectionModel` class and brings more
dependencies; supervision is already an extra here.) dinokit supplies the callback, which is the one predictor, so the
torch and onnxruntime backends and the stored score threshold all work unchanged.

A tile costs a forward pass: N tiles cost about N times a whole-image prediction
(benchmarks/slice_small.py measures the gain and the cost).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dinokit.config import ConfigError
from dinokit.errors import DinokitError
from dinokit.infer.detections import Detections, read_image
from dinokit.infer.predictor import Backend, detect_images

MERGES = ("nms", "fusion")  # supervision's NON_MAX_SUPPRESSION, NON_MAX_MERGE
METRICS = ("iou", "ios")  # intersection over union / over the smaller box


@dataclass(frozen=True)
class Slicing:
    """How an image is tiled and how the tiles' detections are merged.

    `tile`: the tiles' side in the image's pixels; `overlap`: the fraction of a tile shared with
    its neighbour, so an object smaller than `overlap * tile` lies whole in at least one tile.
    Merging is per class: `merge` "nms" keeps the best-scoring box of a group of overlapping ones;
    "fusion" replaces the group by its union (score: the area-weighted mean). Boxes overlap when
    `metric` (iou, or ios: intersection over the smaller box) >= `threshold`. With "ios" the part
    of an object that a tile border cuts off merges into the whole box instead of staying as a box
    of its own. The default, NMS on IoU 0.5, had the best AP in benchmarks/slice_small.py (shapes
    canvases, tiles 128: AP 46.5; nms/ios 46.0, fusion/iou 30.6, fusion/ios 26.6): fusion also
    swallows the low-scoring boxes around an object, which enlarges its box and lowers its score.
    """

    tile: int
    overlap: float = 0.2
    merge: str = "nms"
    metric: str = "iou"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        check_slicing(self.tile, self.overlap)
        if self.merge not in MERGES:
            raise ConfigError(f"slice merge must be one of {', '.join(MERGES)}, got '{self.merge}'")
        if self.metric not in METRICS:
            raise ConfigError(f"slice metric must be one of {', '.join(METRICS)}, got '{self.metric}'")
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"slice merge threshold must be in (0, 1], got {self.threshold}")

    @property
    def overlap_pixels(self) -> int:
        """The overlap in pixels, at most tile - 1 (a positive stride)."""
        return min(self.tile - 1, round(self.tile * self.overlap))


def check_slicing(tile: Any, overlap: Any, flags: bool = False) -> None:
    """The one rule for --slice and --overlap (the message names the flags when `flags`)."""
    tile_name, overlap_name = ("--slice", "--overlap") if flags else ("slice", "overlap")
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 16:
        raise ConfigError(f"{tile_name} must be a tile side of at least 16 pixels, got {tile}")
    if not isinstance(overlap, (int, float)) or not 0.0 <= overlap < 1.0 or math.isnan(overlap):
        raise ConfigError(f"{overlap_name} must be a fraction in [0, 1), got {overlap}")


def as_slicing(slice: int | Slicing | None, overlap: float = 0.2) -> Slicing | None:
    """`Detector.predict(slice=...)`'s argument: a tile side (with `overlap`), a Slicing, or None."""
    if slice is None or isinstance(slice, Slicing):
        return slice
    return Slicing(slice, overlap)


def detect_sliced(
    backend: Backend, inputs: list[tuple[str, Path | Image.Image]], transform: Any, device: torch.device,
    batch_size: int, score: float, slicing: Slicing,
) -> list[Detections]:
    """Detections >= `score` of every input, each predicted tile by tile (`batch_size` tiles per
    forward pass) and merged; boxes in the input's own pixels, highest score first."""
    sv = require_supervision()
    results = []
    for source, item in inputs:
        image = read_image(item) if isinstance(item, Path) else item
        slicer = sv.InferenceSlicer(
            callback=_tile_callback(sv, backend, transform, device, batch_size, score),
            slice_wh=slicing.tile, overlap_wh=slicing.overlap_pixels,
            overlap_filter="non_max_merge" if slicing.merge == "fusion" else "non_max_suppression",
            iou_threshold=slicing.threshold, overlap_metric=slicing.metric, batch_size=batch_size, thread_workers=1,
        )
        merged = slicer(np.asarray(image))  # (H, W, 3) uint8 RGB in, sv.Detections in image pixels out
        order = np.argsort(-merged.confidence, kind="stable") if len(merged) else np.zeros(0, dtype=int)
        labels = merged.class_id[order].astype(np.int64) if len(merged) else np.zeros(0, dtype=np.int64)
        classes = backend.classes
        results.append(Detections(
            xyxy=merged.xyxy[order].astype(np.float32).reshape(-1, 4),
            scores=(merged.confidence[order] if len(merged) else np.zeros(0)).astype(np.float32),
            class_ids=labels, names=[classes[k] if 0 <= k < len(classes) else str(k) for k in labels.tolist()],
            image_size=(image.height, image.width), source=source, category_ids=list(backend.cat_ids),
            image=None if isinstance(item, Path) else image,
        ))
    return results


def _tile_callback(sv: Any, backend: Backend, transform: Any, device: torch.device, batch_size: int,
                   score: float) -> Any:
    """The slicer's callback: tiles ((h, w, 3) uint8 arrays; one alone when batch_size is 1) ->
    sv.Detections in tile pixels, through the one predictor."""

    def run(tiles: list[np.ndarray] | np.ndarray) -> Any:
        batch = tiles if isinstance(tiles, list) else [tiles]
        found = detect_images(backend, [(f"tile{k}", Image.fromarray(t)) for k, t in enumerate(batch)], transform,
                              device, batch_size, score)
        converted = [
            sv.Detections(xyxy=d.xyxy.reshape(-1, 4).astype(np.float64), confidence=d.scores.astype(np.float64),
                          class_id=d.class_ids.astype(int))
            for d in found
        ]
        return converted if isinstance(tiles, list) else converted[0]

    return run


def require_supervision() -> Any:
    try:
        import supervision as sv
    except ImportError:
        raise DinokitError("sliced inference needs the 'supervision' package: pip install 'dinokit[slice]'") from None
    if "batch_size" not in inspect.signature(sv.InferenceSlicer).parameters:  # batched tiles: supervision 0.30
        raise DinokitError(f"sliced inference needs supervision >= 0.30, found {sv.__version__}: "
                           "pip install 'dinokit[slice]'")
    return sv


def evaluate_sliced(
    backend: Backend, transform: Any, device: torch.device, batch_size: int, slicing: Slicing,
    data: str | None = None, split: str = "val", out: str | Path | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """COCO metrics and detections of sliced prediction on a split of the detector's data (or of
    `data`), as `evaluate_model` gives them for whole images: every detection the tiles keep
    (no score threshold), classes matched to the dataset by name; `out`: the diagnostic files."""
    from dinokit.infer.evaluator import evaluate_detections, evaluation_dataset, write_run_diagnostics

    dataset, mapping = evaluation_dataset(backend.cfg, backend.classes, data, split)
    detections: list[dict[str, Any]] = []
    for image_id, path in zip(dataset.ids, dataset.image_paths()):
        found = detect_sliced(backend, [(path, Path(path))], transform, device, batch_size, 0.0, slicing)[0]
        for (x0, y0, x1, y1), score, label in zip(found.xyxy.tolist(), found.scores.tolist(), found.class_ids.tolist()):
            if 0 <= label < len(mapping) and mapping[label] >= 0:
                detections.append({"image_id": int(image_id), "category_id": mapping[label],
                                   "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    metrics = evaluate_detections(dataset.coco, detections)
    if out is not None:
        write_run_diagnostics(dataset.coco, detections, metrics, out)
    return metrics, detections
