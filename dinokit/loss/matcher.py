"""Hungarian matching of predictions to ground truth (scipy's linear_sum_assignment)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


def focal_class_cost(prob: Tensor, labels: Tensor, alpha: float, gamma: float) -> Tensor:
    """Cost of assigning each prediction (N, C probabilities) to each label (M,): (N, M).

    The focal loss of predicting the class minus that of predicting "no object" for it.
    """
    p = prob[:, labels]
    pos = alpha * (1 - p) ** gamma * -(p + 1e-8).log()
    neg = (1 - alpha) * p**gamma * -(1 - p + 1e-8).log()
    return pos - neg


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class: float, cost_bbox: float, cost_giou: float, alpha: float, gamma: float) -> None:
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    @torch.no_grad()
    def forward(self, logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """logits (B, Q, C), boxes (B, Q, 4) cxcywh -> per image (prediction idx, target idx), int64 on CPU.

        Every image's cost matrix is computed where the predictions are and all of them reach the
        host in one transfer (one synchronisation per call, not one per image)."""
        sizes = [len(t["labels"]) for t in targets]
        costs = [self.image_cost(logits[b], boxes[b], t).flatten() for b, t in enumerate(targets) if sizes[b]]
        host = torch.nan_to_num(torch.cat(costs), nan=1e8, posinf=1e8, neginf=-1e8).cpu().numpy() if costs else None
        out, start, queries = [], 0, logits.shape[1]
        for m in sizes:
            if m == 0:
                empty = torch.zeros(0, dtype=torch.long)
                out.append((empty, empty))
                continue
            rows, cols = linear_sum_assignment(host[start:start + queries * m].reshape(queries, m))
            start += queries * m
            out.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return out

    def image_cost(self, logits: Tensor, boxes: Tensor, target: dict[str, Tensor]) -> Tensor:
        """(Q, M) matching cost of one image's predictions against its M ground-truth boxes."""
        # costs in fp32 (the inputs cast here; the criterion calls this with autocast off): near-ties must not flip
        prob = logits.sigmoid().float()
        tgt_boxes = target["boxes"].to(boxes.device).float()
        return (
            self.cost_class * focal_class_cost(prob, target["labels"].to(prob.device), self.alpha, self.gamma)
            + self.cost_bbox * torch.cdist(boxes.float(), tgt_boxes, p=1)
            - self.cost_giou * generalized_box_iou(
                box_convert(boxes.float(), "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
            )
        )
