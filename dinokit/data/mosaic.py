"""DEIM's dense one-to-one matching: four training images tiled 2 x 2 into one (a mosaic).

DEIM (Huang et al. 2025, "DEIM: DETR with Improved Matching for Fast Convergence", arXiv
2412.04234) keeps DETR's one-to-one Hungarian matching but gives it more positives per step: a
mosaic puts the objects of four images into one, so every image of the batch carries about four
times the boxes and each one-to-one match supervises four times the queries. Here the four tiles
meet at the canvas centre, each scaled to fit its quarter with its aspect ratio kept (objects
shrink to about half), the rest of the canvas is black (DEIM's fill value 0), and every box
follows its tile. Which images and when come from data/mixing.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

Tile = tuple[Tensor, Tensor, Tensor]  # image (3, h, w) float; boxes (N, 4) cxcywh in [0, 1] of it; labels (N,)


def fit(image: Tensor, height: int, width: int) -> Tensor:
    """image (3, h, w) scaled to fit in (height, width) with its aspect ratio kept (antialiased bilinear)."""
    h, w = image.shape[-2:]
    scale = min(height / h, width / w)
    size = (max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale))))
    if size == (h, w):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def mosaic(tiles: list[Tile], side: int) -> Tile:
    """Four tiles -> one (3, side, side) image: tile 0 top left, 1 top right, 2 bottom left,
    3 bottom right, each touching the centre. Boxes come back cxcywh normalised to the canvas;
    boxes left under one pixel wide or high by the scaling are dropped with their labels."""
    if len(tiles) != 4:
        raise ValueError(f"a mosaic needs 4 tiles, got {len(tiles)}")
    half = side // 2
    cells = ((half, half), (half, side - half), (side - half, half), (side - half, side - half))  # (h, w)
    canvas = tiles[0][0].new_zeros((3, side, side))
    all_boxes, all_labels = [], []
    for k, ((image, boxes, labels), (cell_h, cell_w)) in enumerate(zip(tiles, cells)):
        tile = fit(image, cell_h, cell_w)
        th, tw = tile.shape[-2:]
        top = half - th if k < 2 else half  # against the centre
        left = half - tw if k % 2 == 0 else half
        canvas[:, top:top + th, left:left + tw] = tile
        scale = torch.tensor([tw, th, tw, th], dtype=boxes.dtype)
        pixels = boxes * scale + torch.tensor([left, top, 0.0, 0.0], dtype=boxes.dtype)  # cxcywh px on the canvas
        keep = (pixels[:, 2] >= 1.0) & (pixels[:, 3] >= 1.0)
        all_boxes.append(pixels[keep] / side)
        all_labels.append(labels[keep])
    return canvas, torch.cat(all_boxes).reshape(-1, 4), torch.cat(all_labels)
