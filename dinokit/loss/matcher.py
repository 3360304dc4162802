"""Hungarian matching of predictions to ground truth (scipy's linear_sum_assignment).

Split in two so that the tensor part can be compiled (training/compiled.py): `costs` is the
(B, Q, G) cost of every query against every padded ground-truth slot, on the device; `assign`
is the host step (one transfer, then scipy per image), which stays outside any graph.

Two training-only aids change the cost (both in `costs`, on the device):
- Stable-DINO's position-modulated cost (`model.position_cost`, Liu et al. 2023, arXiv
  2304.04742: 0.5): the class probability in the focal cost is multiplied by u^position_cost,
  u = (GIoU + 1) / 2 of the pair scaled so that the image's best pair has u = 1, so a query
  whose box is poorly placed pays more for the class it scores;
- DEIMv2's late IoU cost (`iou_cost`, switched on by training/phases.py once model.iou_cost_from
  of the budget is spent): the cost becomes -(class probability x IoU^model.iou_cost_power).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert

from dinokit.loss.boxes import iou_giou
from dinokit.model.denoising import GroundTruth, pad_targets

BIG = 1e8  # what a non-finite cost becomes (scipy refuses inf and nan)


def label_probability(prob: Tensor, labels: Tensor) -> Tensor:
    """prob (..., N, C), labels (..., M) -> (..., N, M): each prediction's probability of each label."""
    return prob.gather(-1, labels.unsqueeze(-2).expand(*prob.shape[:-1], labels.shape[-1]))


def focal_cost(p: Tensor, alpha: float, gamma: float) -> Tensor:
    """The focal loss of predicting the class (probability p, any shape) minus that of "no object"."""
    pos = alpha * (1 - p) ** gamma * -(p + 1e-8).log()
    neg = (1 - alpha) * p**gamma * -(1 - p + 1e-8).log()
    return pos - neg


def focal_class_cost(prob: Tensor, labels: Tensor, alpha: float, gamma: float) -> Tensor:
    """Cost of assigning each prediction to each label: prob (..., N, C), labels (..., M) ->
    (..., N, M). The focal loss of predicting the class minus that of predicting "no object"."""
    return focal_cost(label_probability(prob, labels), alpha, gamma)


def position_modulated(p: Tensor, giou: Tensor, valid: Tensor, power: float) -> Tensor:
    """Stable-DINO's position-modulated class probability: p (B, Q, G) x u^power, u = (GIoU + 1) / 2
    (B, Q, G) scaled per image so that its best real pair (valid (B, G)) has u = 1."""
    u = (giou + 1) / 2
    best = u.masked_fill(~valid[:, None, :], 0.0).amax((1, 2), keepdim=True)  # (B, 1, 1)
    return p * (u * (1.0 / (best + 1e-8)).clamp(min=1.0)).clamp(max=1.0).pow(power)


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class: float, cost_bbox: float, cost_giou: float, alpha: float, gamma: float,
                 position_cost: float = 0.0, iou_cost_power: float = 4.0) -> None:
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma
        self.position_cost = position_cost  # Stable-DINO's exponent; 0: the plain focal cost
        self.iou_cost_power = iou_cost_power
        self.iou_cost = False  # DEIMv2's late IoU cost: set by the trainer when its phase starts

    @torch.no_grad()
    def forward(self, logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """logits (B, Q, C), boxes (B, Q, 4) cxcywh -> per image (prediction idx, target idx), int64 on CPU.

        Every image's cost matrix is computed where the predictions are and all of them reach the
        host in one transfer (one synchronisation per call, not one per image)."""
        gt = pad_targets(targets, boxes.device)
        src, hit = self.assign(self.costs(logits, boxes, gt), gt.valid)
        out = []
        for b in range(len(targets)):
            cols = np.flatnonzero(hit[b])
            cols = cols[np.argsort(src[b, cols])]  # by prediction index, as scipy orders its rows
            out.append((torch.as_tensor(src[b, cols], dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return out

    def costs(self, logits: Tensor, boxes: Tensor, gt: GroundTruth) -> Tensor:
        """(B, Q, G) matching cost of every prediction against every ground-truth slot (padding
        slots get a finite cost that `assign` ignores). fp32 (the inputs cast here; the criterion
        calls this with autocast off): near-ties must not flip."""
        prob = logits.detach().float().sigmoid()  # (B, Q, C)
        boxes = boxes.detach().float()
        tgt = gt.boxes.float()  # (B, G, 4)
        iou, giou = iou_giou(box_convert(boxes, "cxcywh", "xyxy")[:, :, None], box_convert(tgt, "cxcywh", "xyxy")[:, None])
        p = label_probability(prob, gt.labels)  # (B, Q, G)
        if self.iou_cost:  # DEIMv2's change_matcher: class and IoU alone, IoU raised to a high power
            cost = -(p * iou.clamp(min=0.0).pow(self.iou_cost_power))
        else:
            if self.position_cost > 0:
                p = position_modulated(p, giou, gt.valid, self.position_cost)
            cost = (
                self.cost_class * focal_cost(p, self.alpha, self.gamma)
                + self.cost_bbox * torch.cdist(boxes, tgt, p=1)
                - self.cost_giou * giou
            )
        return torch.nan_to_num(cost, nan=BIG, posinf=BIG, neginf=-BIG)

    def image_cost(self, logits: Tensor, boxes: Tensor, target: dict[str, Tensor]) -> Tensor:
        """(Q, M) matching cost of one image's predictions against its M ground-truth boxes."""
        return self.costs(logits[None], boxes[None], pad_targets([target], boxes.device))[0]

    @staticmethod
    def assign(costs: Tensor, valid: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The host step: costs (B, Q, G) and valid (B, G) reach the host in one transfer; per
        image the optimal assignment of its real slots. Returns src (B, G) int64 (the query matched
        to each slot, 0 where none) and hit (B, G) bool (the slot was matched: real, and a query
        was left for it)."""
        B, Q, G = costs.shape
        host = torch.cat((costs.flatten(), valid.flatten().to(costs.dtype))).cpu().numpy()
        cost, real = host[: B * Q * G].reshape(B, Q, G), host[B * Q * G:].reshape(B, G) > 0
        src, hit = np.zeros((B, G), dtype=np.int64), np.zeros((B, G), dtype=bool)
        for b in range(B):
            cols = np.flatnonzero(real[b])
            if cols.size == 0:
                continue
            rows, picked = linear_sum_assignment(cost[b][:, cols])
            src[b, cols[picked]] = rows
            hit[b, cols[picked]] = True
        return src, hit
