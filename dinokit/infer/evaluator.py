"""COCO bbox evaluation: pycocotools' COCOeval turned into a plain metrics dict.

COCOeval prints its progress and summary; we silence it and return numbers instead, so the
trainer, `dinokit eval` and the ablation studio all read the same dict.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dinokit.errors import DataError
from dinokit.infer.precision import autocast

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
_STAT_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR100": 8}


AREAS = {"APs": (0.0, 32.0 ** 2), "APm": (32.0 ** 2, 96.0 ** 2), "APl": (96.0 ** 2, 1e10)}  # COCOeval's ranges


def empty_metrics(class_names: list[str] | None = None, coco_gt: Any = None) -> dict[str, Any]:
    """The metrics of no detections: 0, except the size ranges without ground truth (undefined, NaN)."""
    metrics: dict[str, Any] = {name: 0.0 for name in METRIC_NAMES}
    if coco_gt is not None:
        areas = [a.get("area", 0.0) for a in coco_gt.dataset.get("annotations", []) if not a.get("iscrowd", 0)]
        for name, (low, high) in AREAS.items():
            if not any(low <= area <= high for area in areas):
                metrics[name] = math.nan
    metrics["per_class"] = {name: 0.0 for name in class_names or []}
    return metrics


def is_defined(value: Any) -> bool:
    """False for a metric COCO could not compute (NaN here; -1 in COCOeval's stats)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def evaluate_detections(coco_gt: Any, detections: list[dict[str, Any]]) -> dict[str, Any]:
    """COCO bbox metrics (floats in [0, 1]) for COCO-format `detections`.

    `detections`: dicts with image_id, category_id, bbox [x, y, w, h] in pixels, score.
    Metrics that COCO marks as undefined (-1, e.g. APs without small objects) are NaN: tables show
    "n/a", CSVs leave the cell empty, JSON files hold null.
    `per_class` maps each category name that has ground truth to its AP.
    """
    from dinokit.infer.diagnostics import category_names, empty_curves, run_cocoeval, score_curves, threshold_metrics

    names = category_names(coco_gt)
    if not detections or not coco_gt.getImgIds():
        return {**empty_metrics(list(names.values()), coco_gt), **threshold_metrics(empty_curves(names))}
    evaluator = run_cocoeval(coco_gt, detections)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.summarize()
    stats = evaluator.stats
    metrics: dict[str, Any] = {name: float(stats[i]) if stats[i] > -1 else math.nan for name, i in _STAT_INDEX.items()}
    precision = evaluator.eval["precision"]  # (iou T, recall R, class K, area A, maxdets M)
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        if cat_id not in names:
            continue
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[names[cat_id]] = float(np.mean(p)) if p.size else 0.0
    metrics["per_class"] = per_class
    metrics.update(threshold_metrics(score_curves(evaluator, names)))  # F1-optimal threshold, P, R, F1
    return metrics


def run_evaluation(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    batch_size: int,
    num_select: int,
    label_to_cat: list[int] | None = None,
    workers: int = 0,
    precision: str = "fp32",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run `model` over `dataset` and score it with COCOeval against `dataset.coco`.

    `label_to_cat[i]` is the COCO category id of the model's class i (default: the dataset's
    `cat_ids`); labels mapped to a negative id are dropped. `precision` is a resolved one (fp32,
    bf16, fp16: see dinokit.infer.precision). Returns (metrics, detections).
    """
    from dinokit.data.transforms import collate
    from dinokit.model.postprocess import postprocess

    mapping = list(label_to_cat if label_to_cat is not None else dataset.cat_ids)
    loader = DataLoader(  # own generator: evaluating must not shift the training random streams
        dataset, batch_sampler=batches_by_shape(dataset, batch_size), collate_fn=collate, num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )
    was_training = model.training
    model.eval()
    detections: list[dict[str, Any]] = []
    try:
        with torch.inference_mode():
            for images, masks, targets in loader:
                with autocast(precision, device):
                    outputs = model(images.to(device), masks.to(device))
                orig_sizes = torch.stack([t["orig_size"] for t in targets]).to(device)  # (B, 2) [h, w]
                results = postprocess(outputs, orig_sizes, num_select)
                for target, result in zip(targets, results):
                    detections += _to_coco(int(target["image_id"]), result, mapping)
    finally:
        model.train(was_training)
    return evaluate_detections(dataset.coco, detections), detections


def batches_by_shape(dataset: Dataset, batch_size: int) -> list[list[int]]:
    """Item indices in batches of similar aspect ratio (`batches_by_aspect` on the COCO image
    records' sizes), so that little of a batch is padding; plain order when the records carry no sizes."""
    from dinokit.data.transforms import batches_by_aspect

    coco, ids = getattr(dataset, "coco", None), getattr(dataset, "ids", None)
    shapes = [(1, 1)] * len(dataset)  # type: ignore[arg-type]  # equal ratios: the dataset's order
    if coco is not None and ids is not None:
        records = [coco.imgs.get(i, {}) for i in ids]
        if all(r.get("width") and r.get("height") for r in records):
            shapes = [(r["height"], r["width"]) for r in records]
    return batches_by_aspect(shapes, batch_size)


def _to_coco(image_id: int, result: dict[str, torch.Tensor], mapping: list[int]) -> list[dict[str, Any]]:
    """One image's postprocessed result -> COCO result dicts (xyxy pixels -> xywh pixels)."""
    boxes = result["boxes"].detach().float().cpu()  # (K, 4) xyxy pixels
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    out = []
    for box, score, label in zip(xywh, result["scores"].tolist(), result["labels"].tolist()):
        if not 0 <= label < len(mapping) or mapping[label] < 0:
            continue
        out.append({"image_id": image_id, "category_id": mapping[label], "bbox": box, "score": float(score)})
    return out


def evaluate_model(
    model: nn.Module, cfg: Any, classes: list[str], device: torch.device, data: str | None = None,
    batch_size: int | None = None, precision: str = "fp32", split: str = "val", out: str | Path | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and COCO detections of a loaded model on a split (`split`: train, val or test) of
    its own data (or of `data`); classes are matched by name, so another dataset with the same
    names works. `cfg` is not changed; `precision` a resolved one (or fp32 inside a caller's
    autocast); `out`: a folder for the diagnostic files (PR / F1 curves, confusion matrix; see
    diagnostic_files). The one evaluation path: `Detector.evaluate` (dinokit.load) calls it."""
    dataset, mapping = evaluation_dataset(cfg, classes, data, split)
    metrics, detections = run_evaluation(
        model, dataset, device, batch_size or cfg.train.batch_size, cfg.model.num_select, mapping, cfg.data.workers,
        precision,
    )
    if out is not None:
        write_run_diagnostics(dataset.coco, detections, metrics, out)
    return metrics, detections


def evaluation_dataset(cfg: Any, classes: list[str], data: str | None, split: str) -> tuple[Any, list[int]]:
    """(the `split` of the detector's data or of `data`, the COCO category id of each of the
    detector's `classes`: -1 where the dataset lacks the name); `cfg` is not changed."""
    import copy

    from dinokit.data.coco import build_dataset, resolve_source

    cfg = copy.deepcopy(cfg)
    if data is not None:
        cfg.data.data = data
    dataset = build_dataset(resolve_source(cfg.data), cfg.data, split, train=False)  # type: ignore[arg-type]
    by_name = dict(zip(dataset.class_names, dataset.cat_ids))
    mapping = [int(by_name.get(name, -1)) for name in classes]
    if all(c < 0 for c in mapping):
        raise DataError(
            f"none of the checkpoint's classes ({', '.join(classes[:5])}...) are in the dataset "
            f"({', '.join(dataset.class_names[:5])}...)"
        )
    return dataset, mapping


def write_run_diagnostics(coco_gt: Any, detections: list[dict[str, Any]], metrics: dict[str, Any],
                          out: str | Path) -> list[Path]:
    """The diagnostic files of one evaluation into `out` (eval's output folder, a run folder)."""
    from dinokit.infer.diagnostic_files import write_diagnostics
    from dinokit.infer.diagnostics import diagnose

    return write_diagnostics(diagnose(coco_gt, detections), out, metrics.get("per_class", {}))
