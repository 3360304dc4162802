"""Model outputs -> scored boxes in each original image's pixels."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert


def select_detections(
    logits: Tensor, boxes: Tensor, orig_sizes: Tensor, num_select: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Batched core of `postprocess` (also what the ONNX graph computes).

    logits (B, Q, C), boxes (B, Q, 4) cxcywh in [0, 1], orig_sizes (B, 2) as (h, w). Returns
    scores (B, K), labels (B, K) int64 and boxes (B, K, 4) xyxy in original-image pixels.
    """
    B, Q, C = logits.shape
    prob = logits.sigmoid().view(B, -1)
    k = min(num_select, prob.shape[1])
    scores, index = prob.topk(k, dim=1)
    query, labels = index // C, index % C
    xyxy = box_convert(boxes, "cxcywh", "xyxy").gather(1, query[..., None].expand(-1, -1, 4))
    h, w = orig_sizes.to(xyxy.dtype).unbind(-1)
    xyxy = xyxy * torch.stack((w, h, w, h), -1)[:, None]
    return scores, labels, xyxy


@torch.no_grad()
def postprocess(outputs: dict, orig_sizes: Tensor, num_select: int = 300) -> list[dict[str, Tensor]]:
    """Top `num_select` (query, class) pairs by sigmoid score, as the official PostProcess.

    orig_sizes (B, 2) as (h, w). Returns per image scores (K,), labels (K,) int64 and boxes (K, 4)
    xyxy in original-image pixels (not clipped).
    """
    scores, labels, xyxy = select_detections(outputs["pred_logits"], outputs["pred_boxes"], orig_sizes, num_select)
    return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(scores, labels, xyxy)]
