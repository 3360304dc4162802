"""Train / eval pipelines on torchvision transforms.v2, and the batch collate function.

Pipelines take `(PIL image, {"boxes": BoundingBoxes xyxy pixels, "labels": (N,), ...})` and
return a float32 (3, H, W) image in [0, 1] with boxes still in xyxy pixels of the new size; the
dataset normalises boxes afterwards. Mean/std normalisation is the model's job (ModelConfig).
"""

from __future__ import annotations

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


def train_transforms(cfg: DataConfig) -> v2.Compose:
    """Flip, random multi-scale resize, light colour jitter; just the resize if augment is off."""
    if not cfg.augment:
        return eval_transforms(cfg)
    sizes = train_sizes(cfg)
    # geometry and colour run on the PIL image (faster than on tensors at these sizes); hue
    # jitter is left out: it costs 3x the rest and colour carries no class information anyway
    return v2.Compose([
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomChoice([v2.Resize(size=None, max_size=s) for s in sizes]),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        v2.ToImage(),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(),  # drops boxes that became empty, with their labels
        v2.ToDtype(torch.float32, scale=True),
    ])


def eval_transforms(cfg: DataConfig) -> v2.Compose:
    """Resize the longest side to image_size, keeping the aspect ratio.

    Works on an image alone (prediction) as well as on (image, target).
    """
    return v2.Compose([
        v2.Resize(size=None, max_size=cfg.image_size),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
    ])


def box_cleanup() -> v2.Compose:
    """Clip boxes to the image and drop empty ones (with their labels): the dataset's last step.

    Zero-size or outside boxes would give the box losses nothing to fit.
    """
    return v2.Compose([v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes()])


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
