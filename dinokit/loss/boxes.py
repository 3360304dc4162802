"""Elementwise box overlaps that broadcast: the matcher's (B, Q, G) costs and the criterion's
paired losses use the same arithmetic, with `where` instead of boolean indexing (no host sync,
and no data-dependent shape under torch.compile)."""

from __future__ import annotations

from torch import Tensor
import torch


def iou_giou(a: Tensor, b: Tensor, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """(IoU, GIoU) of xyxy boxes a (..., 4) and b (..., 4), broadcast against each other: paired
    (N, 4) with (N, 4) -> (N,), or all pairs (B, Q, 1, 4) with (B, 1, G, 4) -> (B, Q, G).
    torchvision's generalized_box_iou_loss arithmetic (same eps), so sums equal its to the bit."""
    x1, y1, x2, y2 = a.unbind(-1)
    u1, v1, u2, v2 = b.unbind(-1)
    iw, ih = torch.min(x2, u2) - torch.max(x1, u1), torch.min(y2, v2) - torch.max(y1, v1)
    inter = torch.where((ih > 0) & (iw > 0), iw * ih, torch.zeros_like(iw))
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    hull = (torch.max(x2, u2) - torch.min(x1, u1)) * (torch.max(y2, v2) - torch.min(y1, v1))
    iou = inter / (union + eps)
    return iou, iou - (hull - union) / (hull + eps)
