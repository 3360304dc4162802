"""Detections drawn so that a person can read them: line width and label size follow the image
size, small images are upscaled first, each class keeps one colour across images."""

from __future__ import annotations

import inspect
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes

MIN_DRAW_SIDE = 512  # smaller images are upscaled for drawing, so that labels stay legible
PALETTE = (  # 20 distinct colours (Sasha Trubetskoy's list); class i always gets PALETTE[i % 20]
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#469990", "#9a6324",
    "#800000", "#aaffc3", "#808000", "#000075", "#ffe119", "#dcbeff", "#fabed4", "#ffd8b1", "#a9a9a9", "#fffac8",
)
UNTRACKED = "#7f7f7f"  # a box on video that is not on a track (yet)


def class_color(label: int) -> str:
    """The colour of class index `label`: the same in every image and every run."""
    return PALETTE[int(label) % len(PALETTE)]


def track_color(track_id: int) -> str:
    """The colour of a track on video: one of the palette per id (neighbouring ids differ), grey
    for a box not on a track (id -1)."""
    return UNTRACKED if track_id < 0 else PALETTE[(int(track_id) - 1) % len(PALETTE)]


def draw_scale(width: int, height: int) -> float:
    """Factor the image is enlarged by before drawing (1 for images of MIN_DRAW_SIDE and up)."""
    return max(1.0, MIN_DRAW_SIDE / max(width, height, 1))


def draw_detections(image: Image.Image, boxes: torch.Tensor, labels: list[int], texts: list[str],
                    colors: list[str] | None = None) -> Image.Image:
    """`image` with `boxes` (N, 4) xyxy original pixels drawn in their class colour (or `colors`),
    captioned by `texts`.

    Returns a new RGB image, upscaled when the original is small. Boxes are clipped to the image,
    and captions sit inside the top-left corner of their box, so they stay inside the image.
    """
    scale = draw_scale(image.width, image.height)
    if scale > 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    if len(labels) == 0:
        return image.convert("RGB")
    side = max(image.width, image.height)
    boxes = boxes.detach().float().cpu().reshape(-1, 4) * scale  # (N, 4) xyxy pixels of the drawn image
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height - 1)
    pixels = pil_to_tensor(image.convert("RGB"))  # (3, H, W) uint8
    font = _font_file()
    style = {"font": font, "font_size": max(12, round(side / 40))} if font else {}
    if "fill_labels" in inspect.signature(draw_bounding_boxes).parameters:  # torchvision >= 0.20
        style.update(fill_labels=True, label_colors="white")  # white text on a box-coloured band
    colors = colors if colors is not None else [class_color(i) for i in labels]
    drawn = draw_bounding_boxes(pixels, boxes, labels=texts, colors=colors, width=max(2, round(side / 300)), **style)
    return to_pil_image(drawn)


@lru_cache(maxsize=1)
def _font_file() -> str | None:
    """A scalable TrueType font: DejaVu Sans ships with matplotlib (a dependency)."""
    import matplotlib

    path = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return str(path) if path.is_file() else None
