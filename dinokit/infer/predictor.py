"""Images, folders and globs -> detections: a JSON file and annotated copies of the images.

Images are resized exactly as at evaluation (`eval_transforms`) and batched with others of a
similar shape, so little compute goes into padding.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor
from torchvision.utils import draw_bounding_boxes

from dinokit.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
_SAVE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def expand_sources(sources: list[str]) -> list[Path]:
    """Files as given, folders -> their image files (sorted), globs -> their matches."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise DataError(f"no images found in folder {path}")
            files += found
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(source):
            found = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
            if not found:
                raise DataError(f"no files match {source}")
            files += found
        else:
            raise DataError(f"image not found: {source}")
    return list(dict.fromkeys(files))  # drop duplicates, keep order


def read_image(path: Path) -> Image.Image:
    """An RGB PIL image, or DataError naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc.__class__.__name__} (not an image file or corrupt)") from None


def predict(
    sources: list[str],
    checkpoint: str | Path,
    score: float = 0.3,
    out_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    device: torch.device | str = "auto",
    batch_size: int = 4,
    backend: str = "torch",
    quantize: str = "none",
    compile: bool = False,
    precision: str | None = None,
    say: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Detect objects in every image of `sources`.

    Returns one dict per image: file, width, height and detections (label name, score, box
    xyxy in original-image pixels). Writes annotated images to `out_dir` and the list as JSON
    to `json_path` (each when given). `backend` "onnx" runs an exported .onnx file in onnxruntime;
    `quantize` "int8" and `compile` apply to the torch backend (see dinokit.infer.speed);
    `precision` too (None: the checkpoint's `train.precision`; `say` gets what `auto` chose).
    """
    from dinokit.data.transforms import collate, eval_transforms
    from dinokit.checkpoint import require_checkpoint_file
    from dinokit.runtime.device import resolve_device

    if not 0.0 <= score <= 1.0:
        raise DataError(f"--score must be in [0, 1], got {score}")
    files = expand_sources(sources)
    require_checkpoint_file(checkpoint)
    device = resolve_device(device) if isinstance(device, str) else device
    shapes = [image_shape(p) for p in files]  # (h, w); fail on a bad file before loading the model
    detect, cfg, classes = _detector(checkpoint, backend, device, quantize, compile, precision, say)
    transform = eval_transforms(cfg.data)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        targets = [out / _unique_name(p, used) for p in files]

    order = sorted(range(len(files)), key=lambda i: shapes[i][0] / shapes[i][1])  # similar shapes together
    results: list[dict[str, Any]] = [{} for _ in files]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            images = {i: read_image(files[i]) for i in idx}
            pixels, masks, _ = collate([_prepare(images[i], transform) for i in idx])
            sizes = torch.tensor([shapes[i] for i in idx], device=device)  # (B, 2) [h, w]
            for i, det in zip(idx, detect(pixels.to(device), masks.to(device), sizes)):
                results[i] = _image_result(files[i], images[i], det, classes, score)
                if out is not None:
                    _draw(images[i], results[i], classes).save(targets[i])
                    results[i]["output"] = str(targets[i])
    if json_path is not None:
        json_file = Path(json_path)
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(results, indent=2))
    return results


Detector = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], list[dict[str, torch.Tensor]]]


def _detector(
    checkpoint: str | Path, backend: str, device: torch.device, quantize: str = "none", compile: bool = False,
    precision: str | None = None, say: Callable[[str], None] | None = None,
) -> tuple[Detector, Any, list[str]]:
    """(images, masks, sizes) -> per-image detections, with the config and class names, for a backend."""
    if backend == "onnx":
        from dinokit.infer.export import OnnxDetector

        onnx_model = OnnxDetector(checkpoint, device)
        return onnx_model.detect, onnx_model.cfg, onnx_model.classes
    from dinokit.interop.load import model_from_checkpoint
    from dinokit.infer.precision import autocast, resolve_precision
    from dinokit.infer.speed import prepare_for_inference
    from dinokit.model.postprocess import postprocess

    model, cfg, classes, _ = model_from_checkpoint(checkpoint, device)
    chosen, note = resolve_precision(precision or cfg.train.precision, device)
    if note and say is not None:
        say(note)
    model = prepare_for_inference(model, quantize, compile)

    def detect(images: torch.Tensor, masks: torch.Tensor, sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        with autocast(chosen, device):
            outputs = model(images, masks)
        return postprocess(outputs, sizes, cfg.model.num_select)

    return detect, cfg, classes


def image_shape(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, or DataError naming the file."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc.__class__.__name__} (not an image file or corrupt)") from None


def _prepare(image: Image.Image, transform: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """The eval pipeline needs a (possibly empty) box set next to the image."""
    boxes = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(image.height, image.width))
    pixels, _ = transform(image, {"boxes": boxes, "labels": torch.zeros(0, dtype=torch.int64)})
    return pixels, {}


def _image_result(
    path: Path, image: Image.Image, det: dict[str, torch.Tensor], classes: list[str], score: float
) -> dict[str, Any]:
    keep = det["scores"] >= score
    boxes = det["boxes"][keep].float().cpu()  # (K, 4) xyxy pixels
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
    detections = [
        {"label": classes[int(label)] if 0 <= int(label) < len(classes) else str(int(label)),
         "score": round(float(s), 4), "box": [round(float(v), 2) for v in box]}
        for s, label, box in zip(det["scores"][keep].tolist(), det["labels"][keep].tolist(), boxes.tolist())
    ]
    return {"file": str(path), "width": image.width, "height": image.height, "detections": detections}


def _draw(image: Image.Image, result: dict[str, Any], classes: list[str]) -> Image.Image:
    pixels = pil_to_tensor(image)  # (3, H, W) uint8
    dets = result["detections"]
    if not dets:
        return image
    boxes = torch.tensor([d["box"] for d in dets], dtype=torch.float32)  # (K, 4) xyxy pixels
    palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
               "#42d4f4", "#f032e6", "#bfef45", "#469990", "#9a6324"]
    index = {name: i for i, name in enumerate(classes)}
    colors = [palette[index.get(d["label"], 0) % len(palette)] for d in dets]
    labels = [f"{d['label']} {d['score']:.2f}" for d in dets]
    drawn = draw_bounding_boxes(pixels, boxes, labels=labels, colors=colors, width=2)
    return Image.fromarray(drawn.permute(1, 2, 0).numpy())


def _unique_name(path: Path, used: set[str]) -> str:
    suffix = path.suffix.lower() if path.suffix.lower() in _SAVE_SUFFIXES else ".png"
    name, n = f"{path.stem}{suffix}", 2
    while name in used:
        name, n = f"{path.stem}_{n}{suffix}", n + 1
    used.add(name)
    return name
