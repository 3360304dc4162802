"""Images in any form -> `Detections`: files, folders, globs, PIL images, arrays and tensors.

Images are resized exactly as at evaluation (`eval_transforms`) and batched with others of a
similar shape, so little compute goes into padding. Files are decoded one batch at a time.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors

from dinokit.config import ConfigError
from dinokit.errors import DataError
from dinokit.infer.detections import Detections, read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}

ImageSource = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]
DetectFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], list[dict[str, torch.Tensor]]]


def expand_sources(sources: Sequence[str | Path]) -> list[Path]:
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
        elif glob.has_magic(str(source)):
            found = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if Path(p).is_file())
            if not found:
                raise DataError(f"no files match {source}")
            files += found
        else:
            raise DataError(f"image not found: {source}")
    return list(dict.fromkeys(files))  # drop duplicates, keep order


def gather_inputs(source: ImageSource | Sequence[ImageSource]) -> list[tuple[str, Path | Image.Image]]:
    """(name, file or decoded image) for every image `source` stands for, in order.

    Paths, folders and globs name files (read later, a batch at a time); a PIL image, a NumPy
    (H, W, 3) uint8 array or a torch (3, H, W) float tensor in [0, 1] is one in-memory image.
    """
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    out: list[tuple[str, Path | Image.Image]] = []
    for k, item in enumerate(items):
        if isinstance(item, (str, Path)):
            out += [(str(p), p) for p in expand_sources([item])]
        else:
            out.append((f"image{k}", as_pil(item)))
    if not out:
        raise DataError("no images given")
    return out


def as_pil(image: Any) -> Image.Image:
    """A PIL image, NumPy (H, W, 3) uint8 array or torch (3, H, W) float [0, 1] tensor -> RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"a NumPy image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        return Image.fromarray(image, "RGB")
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise DataError(f"a torch image must be a (3, H, W) float tensor in [0, 1], got {tuple(image.shape)} {image.dtype}")
        if image.numel() and (image.min() < 0 or image.max() > 1):
            raise DataError("a torch image must have values in [0, 1] (divide uint8 pixels by 255)")
        pixels = (image.detach().cpu().float() * 255).round().to(torch.uint8)  # (3, H, W)
        return Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
    raise DataError(f"cannot use a {type(image).__name__} as an image (a path, PIL image, NumPy array or tensor)")


def image_shape(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, or DataError naming the file."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc.__class__.__name__} (not an image file or corrupt)") from None


def input_shapes(inputs: list[tuple[str, Path | Image.Image]]) -> list[tuple[int, int]]:
    """(height, width) of every input (files: from the header), or DataError naming a bad file."""
    return [image_shape(x) if isinstance(x, Path) else (x.height, x.width) for _, x in inputs]


@dataclass
class Backend:
    """What inference needs from a loaded model: the detect function and what it was trained on."""

    detect: DetectFn
    cfg: Any  # dinokit.config.Config
    classes: list[str]
    cat_ids: list[int]
    model: torch.nn.Module | None = None  # None for an ONNX model
    score_threshold: float | None = None  # the F1-optimal score of the best evaluation, if stored


def load_backend(
    checkpoint: str | Path, backend: str, device: torch.device, quantize: str = "none", compile: bool = False
) -> Backend:
    """A checkpoint (dinokit or official) in torch, or an exported .onnx file in onnxruntime."""
    if backend == "onnx":
        from dinokit.infer.export import OnnxDetector

        onnx_model = OnnxDetector(checkpoint, device)
        return Backend(onnx_model.detect, onnx_model.cfg, onnx_model.classes, onnx_model.cat_ids,
                       score_threshold=onnx_model.score_threshold)
    from dinokit.infer.speed import prepare_for_inference
    from dinokit.interop.load import model_and_checkpoint
    from dinokit.model.postprocess import postprocess

    model, cfg, ckpt = model_and_checkpoint(checkpoint, device)
    model = prepare_for_inference(model, quantize, compile)

    def detect(images: torch.Tensor, masks: torch.Tensor, sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return postprocess(model(images, masks), sizes, cfg.model.num_select)

    threshold = ckpt.get("score_threshold")
    return Backend(detect, cfg, list(ckpt["classes"]), [int(c) for c in ckpt["cat_ids"]], model,
                   float(threshold) if isinstance(threshold, (int, float)) and threshold == threshold else None)


def check_predict_options(score: float, batch_size: int, flags: bool = False) -> None:
    """The one rule for prediction's score threshold and batch size, for the CLI (`flags`: the
    message names --score / --batch-size) and the API alike: a ConfigError before any image is read."""
    score_name, batch_name = ("--score", "--batch-size") if flags else ("score", "batch size")
    if not 0.0 <= score <= 1.0:  # NaN fails too
        raise ConfigError(f"{score_name} must be in [0, 1], got {score}")
    if batch_size <= 0:
        raise ConfigError(f"{batch_name} must be positive, got {batch_size}")


def detect_images(
    backend: Backend, inputs: list[tuple[str, Path | Image.Image]], transform: Any, device: torch.device,
    batch_size: int, score: float,
) -> list[Detections]:
    """Detections >= `score` for every input, in input order; batches group similar shapes."""
    from dinokit.data.transforms import batches_by_aspect, collate

    check_predict_options(score, batch_size)
    shapes = input_shapes(inputs)  # (h, w) each
    results: list[Detections | None] = [None] * len(inputs)
    with torch.inference_mode():
        for idx in batches_by_aspect(shapes, batch_size):
            images = {i: read_image(x) if isinstance(x, Path) else x for i in idx for x in [inputs[i][1]]}
            pixels, masks, _ = collate([_prepare(images[i], transform) for i in idx])
            sizes = torch.tensor([shapes[i] for i in idx], device=device)  # (B, 2) [h, w]
            for i, det in zip(idx, backend.detect(pixels.to(device), masks.to(device), sizes)):
                keep_image = None if isinstance(inputs[i][1], Path) else images[i]
                results[i] = _detections(det, inputs[i][0], shapes[i], backend, score, keep_image)
    return [r for r in results if r is not None]


def _prepare(image: Image.Image, transform: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """The eval pipeline needs a (possibly empty) box set next to the image."""
    boxes = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(image.height, image.width))
    pixels, _ = transform(image, {"boxes": boxes, "labels": torch.zeros(0, dtype=torch.int64)})
    return pixels, {}


def _detections(
    det: dict[str, torch.Tensor], source: str, shape: tuple[int, int], backend: Backend, score: float,
    image: Image.Image | None,
) -> Detections:
    keep = det["scores"] >= score
    boxes = det["boxes"][keep].float().cpu()  # (K, 4) xyxy pixels
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, shape[1])
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, shape[0])
    class_ids = det["labels"][keep].cpu().long().numpy()  # (K,) the detector's class index
    classes = backend.classes
    names = [classes[k] if 0 <= k < len(classes) else str(k) for k in class_ids.tolist()]
    return Detections(
        xyxy=boxes.numpy().astype(np.float32), scores=det["scores"][keep].float().cpu().numpy(), class_ids=class_ids,
        names=names, image_size=shape, source=source, category_ids=list(backend.cat_ids), image=image,
    )
