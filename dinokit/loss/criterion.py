"""DINO's training loss: class loss (focal, or an IoU-aware variant: loss/classification.py) + L1 +
GIoU on Hungarian-matched queries, for the last decoder layer, every auxiliary layer, the encoder
proposals, and the denoising groups; with the training-only aids (model/groups.py) also for every
extra query group and the one-to-many queries.

Every term is normalised by the number of ground-truth boxes in the batch (averaged over
processes under torch.distributed); denoising terms by that number times the group count; the
query groups' (group 0 included) by that number times the query groups, so that they average;
the one-to-many terms by the number of repeated boxes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou

from dinokit.config import LossConfig, ModelConfig
from dinokit.loss.classification import classification_loss
from dinokit.loss.matcher import HungarianMatcher
from dinokit.model.dino import DenoisingOutputs
from dinokit.model.groups import repeat_targets

Norm = float | Tensor  # a loss normaliser: a number, or a 0-dim tensor on the losses' device


class SetCriterion(nn.Module):
    def __init__(self, cfg: ModelConfig, loss: LossConfig | None = None) -> None:
        super().__init__()
        self.loss_cfg = loss if loss is not None else LossConfig()
        self.query_groups, self.one_to_many_k = cfg.query_groups, cfg.one_to_many_k
        self.matcher = HungarianMatcher(cfg.cost_class, cfg.cost_bbox, cfg.cost_giou, cfg.focal_alpha, cfg.focal_gamma)
        self.num_classes = cfg.num_classes
        self.alpha, self.gamma = cfg.focal_alpha, cfg.focal_gamma
        self.weights = (cfg.loss_class, cfg.loss_bbox, cfg.loss_giou)
        self.neg_target = cfg.neg_target

    # ------------------------------------------------------------------ pieces

    def class_loss(self, logits: Tensor, onehot: Tensor, iou: Tensor, keep: Tensor | None, norm: Norm) -> Tensor:
        """LossConfig.cls summed over queries and classes; iou (..., Q) of each query's box with its
        target (IoU-aware losses); `keep` (..., Q) masks out queries."""
        loss = classification_loss(self.loss_cfg.cls, logits, onehot, iou, self.loss_cfg, self.alpha, self.gamma)
        if keep is not None:
            loss = loss * keep[..., None]
        return loss.sum() / norm

    def box_losses(self, pred: Tensor, target: Tensor, norm: Norm) -> tuple[Tensor, Tensor]:
        """L1 and GIoU of paired (N, 4) cxcywh boxes, summed and normalised."""
        l1 = (pred - target).abs().sum() / norm
        giou = giou_loss_sum(box_convert(pred, "cxcywh", "xyxy"), box_convert(target, "cxcywh", "xyxy")) / norm
        return l1, giou

    def weighted(self, cls: Tensor, l1: Tensor, giou: Tensor) -> Tensor:
        return self.weights[0] * cls + self.weights[1] * l1 + self.weights[2] * giou

    def set_loss(self, logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]], num_boxes: Norm):
        """Hungarian-matched (class, L1, GIoU) for one set of predictions (B, Q, C) / (B, Q, 4)."""
        logits, boxes = logits.float(), boxes.float()  # fp32 losses: focal/GIoU lose their small terms in bf16
        batch, src, tgt = matched_indices(self.matcher(logits.detach(), boxes.detach(), targets), targets, logits.device)
        labels = torch.cat([t["labels"] for t in targets]).to(logits.device)[tgt]
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes.device)[tgt]
        onehot = torch.zeros_like(logits)
        onehot[batch, src, labels] = 1.0
        iou = torch.zeros_like(logits[..., 0])  # (B, Q)
        if self.loss_cfg.cls != "focal":
            iou[batch, src] = pair_iou(boxes[batch, src].detach(), tgt_boxes.to(boxes.dtype))
        cls = self.class_loss(logits, onehot, iou, None, num_boxes)
        l1, giou = self.box_losses(boxes[batch, src], tgt_boxes.to(boxes.dtype), num_boxes)
        keep_in_graph = boxes.sum() * 0.0  # no boxes at all: the box head still gets a (zero) gradient
        return cls, l1 + keep_in_graph, giou

    def denoising_loss(self, dn: DenoisingOutputs, num_boxes: Norm) -> tuple[Tensor, Tensor]:
        """Weighted denoising loss over all layers; with two draws, the lower draw's.

        Returns (loss, index of the draw kept, a 0-dim tensor: choosing it reads nothing on the host).
        """
        q = dn.queries
        per_draw = []
        for d in range(q.draws):
            sl = q.draw_slice(d)
            logits, boxes = dn.logits[:, :, sl].float(), dn.boxes[:, :, sl].float()  # (layers, B, Pd, C|4), fp32
            valid = ~q.padding[:, sl]
            negative = q.negative[:, sl]
            labels, tgt_boxes = q.labels[:, sl], q.boxes[:, sl]
            if self.neg_target == "closest-gt":
                labels, tgt_boxes = closest_gt_targets(q, sl)
                supervised = valid  # negatives learn the class and box of their closest ground truth
            else:
                supervised = valid & ~negative  # negatives learn "no object" and no box
            # the mask as indices once per draw: every boolean-mask index is a host sync on CUDA
            # (its result's size), and the layers below would take 4 each
            pick = supervised.nonzero(as_tuple=True)
            onehot = torch.zeros_like(logits[0])
            onehot[(*pick, labels[pick])] = 1.0
            picked_targets = tgt_boxes[pick]
            norm = num_boxes * q.groups
            total = logits.new_zeros(())
            for layer in range(logits.shape[0]):
                iou = torch.zeros_like(logits[layer][..., 0])  # (B, Pd)
                if self.loss_cfg.cls != "focal":
                    iou[pick] = pair_iou(boxes[layer][pick].detach(), picked_targets)
                cls = self.class_loss(logits[layer], onehot, iou, valid.to(logits.dtype), norm)
                l1, giou = self.box_losses(boxes[layer][pick], picked_targets, norm)
                total = total + self.weighted(cls, l1, giou)
            per_draw.append(total)
        losses = torch.stack(per_draw)
        kept = losses.detach().argmin()
        return losses.index_select(0, kept.view(1))[0], kept

    # ------------------------------------------------------------------ total

    def deep_loss(self, outputs: dict, targets: list[dict[str, Tensor]], num_boxes: Norm) -> Tensor:
        """Weighted matched loss of one query set over its last and auxiliary layers."""
        total = self.weighted(*self.set_loss(outputs["pred_logits"], outputs["pred_boxes"], targets, num_boxes))
        for layer in outputs.get("aux_outputs", []):
            total = total + self.weighted(*self.set_loss(layer["pred_logits"], layer["pred_boxes"], targets, num_boxes))
        return total

    def forward(self, outputs: dict, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The weighted total under "loss" (to backpropagate) and detached parts for logging."""
        device = outputs["pred_logits"].device
        # the losses and the matcher's costs stay fp32 under autocast: log/exp of focal terms and
        # GIoU's areas underflow or round away in bf16/fp16
        with torch.autocast(device.type, enabled=False):
            return self._losses(outputs, targets, device)

    def _losses(self, outputs: dict, targets: list[dict[str, Tensor]], device: torch.device) -> dict[str, Tensor]:
        num_boxes = count_boxes(targets, device)
        groups = 1 + len(outputs.get("group_outputs") or [])
        norm = num_boxes * groups  # Group DETR: the groups' losses average
        cls, l1, giou = self.set_loss(outputs["pred_logits"], outputs["pred_boxes"], targets, norm)
        loss = self.weighted(cls, l1, giou)
        parts = {"loss_class": cls, "loss_bbox": l1, "loss_giou": giou}
        aux = loss.new_zeros(())
        for layer in outputs.get("aux_outputs", []):
            aux = aux + self.weighted(*self.set_loss(layer["pred_logits"], layer["pred_boxes"], targets, norm))
        parts["loss_aux"] = aux
        if outputs.get("enc_outputs") is not None:
            enc = outputs["enc_outputs"]
            parts["loss_enc"] = self.weighted(*self.set_loss(enc["pred_logits"], enc["pred_boxes"], targets, num_boxes))
        if outputs.get("dn") is not None:
            parts["loss_dn"], parts["dn_draw"] = self.denoising_loss(outputs["dn"], num_boxes)
        if groups > 1:
            parts["loss_groups"] = sum(self.deep_loss(g, targets, norm) for g in outputs["group_outputs"])
        if outputs.get("one_to_many") is not None:
            repeated = repeat_targets(targets, self.one_to_many_k)
            parts["loss_one_to_many"] = self.deep_loss(outputs["one_to_many"], repeated, count_boxes(repeated, device))
        total = loss + aux + sum(parts.get(k, 0.0) for k in ("loss_enc", "loss_dn", "loss_groups", "loss_one_to_many"))
        out = {"loss": total}
        out.update({k: (v.detach() if isinstance(v, Tensor) else torch.tensor(v)) for k, v in parts.items()})
        return out


def giou_loss_sum(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """sum(1 - GIoU) of paired xyxy boxes (N, 4): torchvision's generalized_box_iou_loss(reduction=
    "sum") in value and gradient, but the empty intersections are masked with `where`, not by
    boolean indexing (each x[mask] is a host sync on CUDA: five per call, ~35 calls a step)."""
    x1, y1, x2, y2 = a.unbind(-1)
    u1, v1, u2, v2 = b.unbind(-1)
    iw, ih = torch.min(x2, u2) - torch.max(x1, u1), torch.min(y2, v2) - torch.max(y1, v1)
    inter = torch.where((ih > 0) & (iw > 0), iw * ih, torch.zeros_like(iw))
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    hull = (torch.max(x2, u2) - torch.min(x1, u1)) * (torch.max(y2, v2) - torch.min(y1, v1))
    giou = inter / (union + eps) - (hull - union) / (hull + eps)
    return (1 - giou).sum()


def pair_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of paired cxcywh boxes a, b (N, 4) -> (N,)."""
    if a.shape[0] == 0:
        return a.new_zeros(0)
    return box_iou(box_convert(a, "cxcywh", "xyxy"), box_convert(b, "cxcywh", "xyxy")).diagonal()


def closest_gt_targets(q, sl: slice) -> tuple[Tensor, Tensor]:
    """The seed's variant: each denoising slot's target is the ground truth (of its own image)
    closest, in L1 over cxcywh, to its noised box. Positives keep their own box when it is the
    closest, which it is for any positive noise below half the box size."""
    noised = q.noised[:, sl]  # (B, Pd, 4)
    dist = torch.cdist(noised, q.gt_boxes, p=1)  # (B, Pd, max_gt)
    dist = dist.masked_fill(~q.gt_valid[:, None, :], float("inf"))
    nearest = dist.argmin(-1)  # (B, Pd)
    labels = q.gt_labels.gather(1, nearest)
    boxes = q.gt_boxes.gather(1, nearest[..., None].expand(-1, -1, 4))
    negative = q.negative[:, sl]
    labels = torch.where(negative, labels, q.labels[:, sl])
    boxes = torch.where(negative[..., None], boxes, q.boxes[:, sl])
    return labels, boxes


def count_boxes(targets: list[dict[str, Tensor]], device: torch.device) -> Tensor:
    """Ground-truth boxes in the batch, averaged over processes; at least 1. A 0-dim fp32 tensor on
    `device`: the losses divide by it where they are, without reading it on the host."""
    n = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n)
        n = n / dist.get_world_size()
    return n.clamp(min=1.0)


def matched_indices(
    indices: list[tuple[Tensor, Tensor]], targets: list[dict[str, Tensor]], device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """The matcher's per-image (prediction, target) pairs as (image, prediction, target row in
    the batch's concatenated targets), built on the host and moved to `device` in one copy that
    does not wait for the device (no per-image transfers)."""
    offsets = [0]
    for t in targets:
        offsets.append(offsets[-1] + len(t["labels"]))
    host = torch.cat([
        torch.stack((torch.full_like(src, b), src, tgt + offsets[b])) for b, (src, tgt) in enumerate(indices)
    ], 1) if indices else torch.zeros(3, 0, dtype=torch.long)
    batch, src, tgt = host.to(device, non_blocking=True).unbind(0)
    return batch, src, tgt


def build_criterion(cfg: ModelConfig, loss: LossConfig | None = None) -> SetCriterion:
    return SetCriterion(cfg, loss)
