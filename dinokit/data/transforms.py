"""Train / eval pipelines on torchvision transforms.v2, and the batch collate function.

Pipelines take `(PIL image, {"boxes": BoundingBoxes xyxy pixels, "labels": (N,), ...})` and
return a float32 (3, H, W) image in [0, 1] with boxes still in xyxy pixels of the new size; the
dataset normalises boxes afterwards. Mean/std normalisation is the model's job (ModelConfig).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision.transforms import v2

from dinokit.config import DataConfig

SIZE_STEP = 32  # training sizes are multiples of the backbone's coarsest stride


def train_sizes(cfg: DataConfig) -> list[int]:
    """Longest-side sizes to draw from in training: multiples of 32 in [min_size, image_size]."""
    low = cfg.min_size if cfg.min_size > 0 else round(0.6 * cfg.image_size)
    low = min(low, cfg.image_size)
    first = -(-low // SIZE_STEP) * SIZE_STEP  # round up to a multiple of 32
    sizes = list(range(first, cfg.image_size + 1, SIZE_STEP))
    return sizes or [cfg.image_size]


def train_transforms(cfg: DataConfig, strong: bool = True) -> v2.Compose:
    """Flip, a random crop with probability `cfg.crop`, random multi-scale resize, light colour
    jitter; just the resize if augment is off. strong=False (the final phase without strong
    augmentation, training/phases.py): the flip and the largest training size only."""
    if not cfg.augment:
        return eval_transforms(cfg)
    if not strong:
        return v2.Compose([
            v2.RandomHorizontalFlip(p=0.5),
            v2.Resize(size=None, max_size=cfg.image_size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ])
    sizes = train_sizes(cfg)
    # no RandomApply at 0: it would still draw a number per image and shift every later draw,
    # so runs without the crop keep the augmentation streams they had before it existed
    crop = [v2.RandomApply([RandomSizeCrop()], p=cfg.crop)] if cfg.crop > 0 else []
    # geometry and colour run on the PIL image (faster than on tensors at these sizes); hue
    # jitter is left out: it costs 3x the rest and colour carries no class information anyway
    return v2.Compose([
        v2.RandomHorizontalFlip(p=0.5),
        *crop,
        v2.RandomChoice([v2.Resize(size=None, max_size=s) for s in sizes]),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        v2.ToImage(),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(),  # drops boxes that became empty, with their labels
        v2.ToDtype(torch.float32, scale=True),
    ])


class RandomSizeCrop(v2.Transform):
    """DETR's and DINO's training crop: each side a uniform fraction in [min_fraction, 1] of the
    image's, at a uniform position. Boxes are cut to the crop; those left empty are dropped by the
    cleanup after it (an image may keep no box at all, as in the official pipeline)."""

    def __init__(self, min_fraction: float = 0.5) -> None:
        super().__init__()
        self.min_fraction = min_fraction

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        frac = self.min_fraction + (1.0 - self.min_fraction) * torch.rand(2)  # (h, w) fractions
        h, w = max(1, int(height * frac[0])), max(1, int(width * frac[1]))
        top = int(torch.randint(0, height - h + 1, ()))
        left = int(torch.randint(0, width - w + 1, ()))
        return {"top": top, "left": left, "height": h, "width": w}

    def transform(self, inpt: object, params: dict) -> object:
        return self._call_kernel(v2.functional.crop, inpt, **params)


def eval_transforms(cfg: DataConfig) -> v2.Compose:
    """Resize the longest side to image_size (or as the official code, `eval_resize: official`),
    keeping the aspect ratio. The decoded image is resized, before the conversion to float.

    Works on an image alone (prediction) as well as on (image, target).
    """
    resize = OfficialResize() if cfg.eval_resize == "official" else v2.Resize(size=None, max_size=cfg.image_size)
    return v2.Compose([
        resize,
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
    ])


def official_size(height: int, width: int, size: int = 800, max_size: int = 1333) -> tuple[int, int]:
    """(h, w) after IDEA-Research/DINO's test-time resize (`get_size_with_aspect_ratio`): shorter
    side to `size` unless the longer side would pass `max_size`; the longer side is truncated."""
    short, long = min(height, width), max(height, width)
    if long / short * size > max_size:
        size = int(round(max_size * short / long))
    if short == size:
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


class OfficialResize(v2.Transform):
    """The official test-time resize (shorter side 800, longer at most 1333) on the PIL image and
    its boxes; PIL bilinear on the uint8 image, as the official pipeline, so the pixels are equal."""

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        return {"size": official_size(height, width)}

    def transform(self, inpt: object, params: dict) -> object:
        return self._call_kernel(v2.functional.resize, inpt, size=list(params["size"]))


def box_cleanup() -> v2.Compose:
    """Clip boxes to the image and drop empty ones (with their labels): the dataset's last step.

    Zero-size or outside boxes would give the box losses nothing to fit.
    """
    return v2.Compose([v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes()])


def batches_by_aspect(shapes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices of `shapes` ((height, width) each) in batches of similar aspect ratio, so that
    `collate` pads little: the one batching rule of evaluation and prediction. Equal ratios keep
    their order (the sort is stable)."""
    order = sorted(range(len(shapes)), key=lambda i: shapes[i][0] / shapes[i][1])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(batch: list[tuple[Tensor, dict]]) -> tuple[Tensor, Tensor, list[dict]]:
    """Stack images of different sizes by zero-padding at the bottom and right.

    Returns images (B, 3, H, W) with H, W the batch maxima, masks (B, H, W) bool that are True
    on padding (DETR's convention), and the list of target dicts unchanged (their boxes are
    normalised to each image's own size, not to the padded size).
    """
    if not batch:
        raise ValueError("collate got an empty batch")
    images = [img for img, _ in batch]
    height = max(img.shape[-2] for img in images)
    width = max(img.shape[-1] for img in images)
    out = images[0].new_zeros((len(images), 3, height, width))  # (B, 3, H, W)
    masks = torch.ones((len(images), height, width), dtype=torch.bool)  # (B, H, W) True = padding
    for i, img in enumerate(images):
        h, w = img.shape[-2:]
        out[i, :, :h, :w] = img
        masks[i, :h, :w] = False
    return out, masks, [t for _, t in batch]
