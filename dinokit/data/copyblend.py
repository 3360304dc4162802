"""DEIMv2's Copy-Blend: objects of other training images pasted into an image, blended, with their boxes.

DEIMv2 (Huang et al. 2025, configs/base/deimv2.yml: copyblend_prob 0.5, num_objects 3,
area_threshold 100, with_expand, expand_ratios [0.1, 0.25]) adds objects to an image rather
than whole images (mixup) or tiles (mosaic): each picked object's box, widened by a random 10-25%
of its size on every side so that some of its surroundings come along, is copied to a uniform
random place in the image and blended as image * beta + patch * (1 - beta) with one beta in
[0.45, 0.55] per image. The pasted box (the object's own, not the widened one) and its label are
appended to the targets; objects already there keep their boxes (blending leaves them visible).

Differences from DEIMv2, where the batch's images all have one size: the donors are other images
of the training set (drawn by data/mixing.py), and a patch larger than the image is scaled down
to fit; objects smaller than DEIMv2's 100 px at 640 x 640 (the same fraction of the image here)
are not copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_AREA = 100 / 640**2  # DEIMv2's area_threshold (100 px at its 640 x 640 images), as a fraction of the image
BETA = (0.45, 0.55)  # weight of the image under a pasted patch (DEIMv2's mixup beta range)
EXPAND = (0.1, 0.25)  # the copied region grows by this fraction of the object's size on each side

Sample = tuple[Tensor, Tensor, Tensor]  # image (3, H, W) float; boxes (N, 4) cxcywh in [0, 1]; labels (N,)


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform in [0, high] (both ends)."""
    return int(torch.randint(0, high + 1, (), generator=generator))


def candidates(donors: list[Sample]) -> list[tuple[int, int]]:
    """(donor, object) pairs large enough to copy: box area at least MIN_AREA of the donor image."""
    return [(d, k) for d, (_, boxes, _) in enumerate(donors)
            for k in range(len(boxes)) if float(boxes[k, 2] * boxes[k, 3]) >= MIN_AREA]


def copy_blend(sample: Sample, donors: list[Sample], objects: int, generator: torch.Generator) -> Sample:
    """Paste up to `objects` objects drawn from `donors` into `sample`; returns the new sample.
    Draws (which objects, where, beta, widening) come from `generator` only."""
    image, boxes, labels = sample
    pool = candidates(donors)
    if not pool or objects <= 0:
        return sample
    picked = [pool[i] for i in torch.randperm(len(pool), generator=generator)[:objects].tolist()]
    beta = _uniform(*BETA, generator)
    out = image.clone()
    H, W = image.shape[-2:]
    new_boxes, new_labels = [], []
    for d, k in picked:
        donor, donor_boxes, donor_labels = donors[d]
        placed = _paste(out, donor, donor_boxes[k], beta, generator)
        if placed is not None:
            new_boxes.append(torch.tensor(placed, dtype=boxes.dtype) / torch.tensor([W, H, W, H], dtype=boxes.dtype))
            new_labels.append(donor_labels[k])
    if not new_boxes:
        return sample
    return out, torch.cat((boxes, torch.stack(new_boxes))), torch.cat((labels, torch.stack(new_labels)))


def _paste(out: Tensor, donor: Tensor, box: Tensor, beta: float,
           generator: torch.Generator) -> tuple[float, float, float, float] | None:
    """Blend one object of `donor` (box cxcywh in [0, 1] of it) into `out` (3, H, W) in place at a
    random place; returns the pasted box as cxcywh pixels of `out`, None if nothing was left."""
    H, W = out.shape[-2:]
    dh, dw = donor.shape[-2:]
    cx, cy, bw, bh = box.tolist()
    x1, y1 = max(0, round((cx - bw / 2) * dw)), max(0, round((cy - bh / 2) * dh))  # pixel edges
    x2, y2 = min(dw, round((cx + bw / 2) * dw)), min(dh, round((cy + bh / 2) * dh))
    if x2 <= x1 or y2 <= y1:
        return None
    shrink = min(1.0, W / (x2 - x1), H / (y2 - y1))
    if shrink < 1.0:  # the object is larger than the image: scale the donor so that it fits
        dh, dw = max(1, int(dh * shrink)), max(1, int(dw * shrink))
        donor = F.interpolate(donor[None], size=(dh, dw), mode="bilinear", align_corners=False, antialias=True)[0]
        x1, y1 = int(x1 * shrink), int(y1 * shrink)
        x2, y2 = min(dw, max(x1 + 1, int(x2 * shrink))), min(dh, max(y1 + 1, int(y2 * shrink)))
    pw, ph = min(x2 - x1, W), min(y2 - y1, H)
    x2, y2 = x1 + pw, y1 + ph
    left, top = _randint(W - pw, generator), _randint(H - ph, generator)  # the object's place in `out`
    grow = _uniform(*EXPAND, generator)
    ew, eh = int(pw * grow), int(ph * grow)
    # the widened region: as far as both the donor and `out` reach on each side
    l, t = min(ew, x1, left), min(eh, y1, top)
    r, b = min(ew, dw - x2, W - left - pw), min(eh, dh - y2, H - top - ph)
    region = out[:, top - t:top + ph + b, left - l:left + pw + r]
    patch = donor[:, y1 - t:y2 + b, x1 - l:x2 + r]
    region.mul_(beta).add_(patch, alpha=1.0 - beta)
    return left + pw / 2, top + ph / 2, float(pw), float(ph)
