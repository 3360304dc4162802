"""Model outputs -> scored boxes in each original image's pixels."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert


@torch.no_grad()
def postprocess(outputs: dict, orig_sizes: Tensor, num_select: int = 300) -> list[dict[str, Tensor]]:
    """Top `num_select` (query, class) pairs by sigmoid score, as the official PostProcess.

    orig_sizes (B, 2) as (h, w). Returns per image scores (K,), labels (K,) int64 and boxes (K, 4)
    xyxy in original-image pixels (not clipped).
    """
    logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]  # (B, Q, C), (B, Q, 4)
    B, Q, C = logits.shape
    prob = logits.sigmoid().view(B, -1)
    k = min(num_select, prob.shape[1])
    scores, index = prob.topk(k, dim=1)
    query, labels = index // C, index % C
    xyxy = box_convert(boxes, "cxcywh", "xyxy").gather(1, query[..., None].expand(-1, -1, 4))
    h, w = orig_sizes.to(xyxy.dtype).unbind(-1)
    xyxy = xyxy * torch.stack((w, h, w, h), -1)[:, None]
    return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(scores, labels, xyxy)]
