"""Denoising query groups (ModelConfig.denoising, dn_draws): CDN (DINO) or DN (DN-DETR).

Each group holds one noised copy of every ground-truth box of the batch. With CDN a group has a
positive half (each box edge moved by less than lambda1 = box_noise times half the box side) and
a negative half (moved by [lambda1, 2 lambda1)); DN keeps the positive half only. The layout of
the P denoising queries, which come before the K matching queries in the decoder, is

    draw d, group g, half h (0 positive, 1 negative), slot j < max_gt
    index = ((d * groups + g) * halves + h) * max_gt + j

Slot j of image b is padding when b has at most j boxes: padded queries are masked as attention
keys and left out of the loss. Matching queries cannot see any denoising query, and no group can
see another (the attention mask), so the matching outputs do not depend on denoising at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from dinokit.config import ModelConfig
from dinokit.model.heads import inverse_sigmoid


@dataclass
class DenoisingQueries:
    content: Tensor  # (B, P, D) label embeddings of the (label-noised) classes, zero on padding
    anchors: Tensor  # (B, P, 4) inverse-sigmoid noised boxes
    attn_mask: Tensor  # (P + K, P + K) bool, True where attention is blocked
    padding: Tensor  # (B, P) bool, True on padded slots
    labels: Tensor  # (B, P) int64 ground-truth class of each slot
    boxes: Tensor  # (B, P, 4) ground-truth box of each slot, cxcywh in [0, 1]
    noised: Tensor  # (B, P, 4) the noised input box of each slot, cxcywh in [0, 1]
    negative: Tensor  # (B, P) bool, True on the negative half of each group
    gt_boxes: Tensor  # (B, max_gt, 4) per-image ground truth, padded
    gt_labels: Tensor  # (B, max_gt)
    gt_valid: Tensor  # (B, max_gt) bool
    draws: int
    groups: int  # groups per draw
    max_gt: int

    @property
    def size(self) -> int:
        return self.content.shape[1]

    def draw_slice(self, draw: int) -> slice:
        per_draw = self.size // self.draws
        return slice(draw * per_draw, (draw + 1) * per_draw)


class GroundTruth(NamedTuple):
    """A batch's ground truth padded to `slots` per image (the first `count` of each row are real):
    fixed shapes, so that a compiled model and criterion see the same graph for every batch whose
    counts fall in the same bucket (training/compiled.py)."""

    boxes: Tensor  # (B, G, 4) cxcywh in [0, 1], zero on padding
    labels: Tensor  # (B, G) int64, 0 on padding
    valid: Tensor  # (B, G) bool, True on real boxes

    def repeat(self, k: int) -> "GroundTruth":
        """Every slot repeated k times along G (H-DETR's one-to-many targets, padding included)."""
        return GroundTruth(self.boxes.repeat(1, k, 1), self.labels.repeat(1, k), self.valid.repeat(1, k))


def pad_targets(targets: list[dict[str, Tensor]], device: torch.device, slots: int | None = None) -> GroundTruth:
    """Ground truth padded to `slots` per image (default: the batch's largest count)."""
    n = max(len(t["labels"]) for t in targets)
    n = n if slots is None else max(n, slots)
    boxes = torch.zeros(len(targets), n, 4, device=device)
    labels = torch.zeros(len(targets), n, dtype=torch.long, device=device)
    valid = torch.zeros(len(targets), n, dtype=torch.bool, device=device)
    for b, t in enumerate(targets):
        k = len(t["labels"])
        boxes[b, :k] = t["boxes"].to(device)
        labels[b, :k] = t["labels"].to(device)
        valid[b, :k] = True
    return GroundTruth(boxes, labels, valid)


def noise_boxes(boxes: Tensor, negative: Tensor, scale: float) -> Tensor:
    """Move each edge of cxcywh boxes (..., 4) by a random fraction of half the box side.

    Positives move by [0, scale), negatives (negative (...) True) by [scale, 2 scale), in units of
    half the width (x edges) or height (y edges). Returns clamped cxcywh boxes.
    """
    corners = box_convert(boxes, "cxcywh", "xyxy")
    half = torch.cat((boxes[..., 2:], boxes[..., 2:]), -1) / 2  # (w/2, h/2, w/2, h/2)
    sign = torch.randint(0, 2, boxes.shape, device=boxes.device).to(boxes.dtype) * 2 - 1
    magnitude = torch.rand(boxes.shape, device=boxes.device) + negative[..., None].to(boxes.dtype)
    corners = (corners + sign * magnitude * half * scale).clamp(0.0, 1.0)
    return box_convert(corners, "xyxy", "cxcywh")


def noise_labels(labels: Tensor, ratio: float, num_classes: int) -> Tensor:
    """Redraw each label uniformly with probability ratio / 2 (the official dn_label_noise_ratio)."""
    redraw = torch.rand(labels.shape, device=labels.device) < ratio * 0.5
    random = torch.randint(0, num_classes, labels.shape, device=labels.device)
    return torch.where(redraw, random, labels)


class Denoising(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.contrastive = cfg.denoising == "cdn"
        self.budget = cfg.dn_number
        self.draws = cfg.dn_draws
        self.label_noise = cfg.label_noise
        self.box_noise = cfg.box_noise
        self.num_classes = cfg.num_classes
        self.label_enc = nn.Embedding(cfg.num_classes + 1, cfg.hidden_dim)

    def forward(self, targets: list[dict[str, Tensor]] | GroundTruth, num_queries: int) -> DenoisingQueries | None:
        """Build the groups for a batch; None when the batch has no boxes (zero groups). Padded
        ground truth (compiled training) counts its slots, not its boxes: `groups` comes from the
        shape, so a bucket holds one graph."""
        device = self.label_enc.weight.device
        gt = targets if isinstance(targets, GroundTruth) else pad_targets(targets, device)
        gt_boxes, gt_labels, gt_valid = gt
        max_gt = gt_boxes.shape[1]
        if max_gt == 0 or self.budget == 0:
            return None
        B = gt_boxes.shape[0]
        groups = max(1, self.budget // max_gt)
        halves = 2 if self.contrastive else 1
        blocks = self.draws * groups * halves
        shape = (B, self.draws * groups, halves, max_gt)
        boxes = gt_boxes[:, None, None].expand(*shape, 4)
        labels = gt_labels[:, None, None].expand(shape)
        negative = (torch.arange(halves, device=device) == 1).view(1, 1, halves, 1).expand(shape)
        padding = ~gt_valid[:, None, None].expand(shape)
        noised = noise_boxes(boxes, negative, self.box_noise)
        noisy_labels = noise_labels(labels, self.label_noise, self.num_classes)
        content = self.label_enc(noisy_labels) * (~padding)[..., None]
        anchors = inverse_sigmoid(noised).masked_fill(padding[..., None], 0.0)

        P = blocks * max_gt
        block = torch.arange(P, device=device) // (halves * max_gt)  # group index of each slot
        attn_mask = torch.zeros(P + num_queries, P + num_queries, dtype=torch.bool, device=device)
        attn_mask[P:, :P] = True  # matching queries never see denoising queries
        attn_mask[:P, :P] = block[:, None] != block[None, :]  # groups never see each other

        def flat(x: Tensor) -> Tensor:
            return x.reshape(B, P, *x.shape[4:])

        return DenoisingQueries(
            content=flat(content), anchors=flat(anchors), attn_mask=attn_mask, padding=flat(padding),
            labels=flat(labels), boxes=flat(boxes), noised=flat(noised), negative=flat(negative),
            gt_boxes=gt_boxes, gt_labels=gt_labels, gt_valid=gt_valid,
            draws=self.draws, groups=groups, max_gt=max_gt,
        )
