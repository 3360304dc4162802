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
from torchvision.ops import box_convert, box_iou, generalized_box_iou_loss

from dinokit.config import LossConfig, ModelConfig
from dinokit.loss.classification import classification_loss
from dinokit.loss.matcher import HungarianMatcher
from dinokit.model.dino import DenoisingOutputs
from dinokit.model.groups import repeat_targets


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

    def class_loss(self, logits: Tensor, onehot: Tensor, iou: Tensor, keep: Tensor | None, norm: float) -> Tensor:
        """LossConfig.cls summed over queries and classes; iou (..., Q) of each query's box with its
        target (IoU-aware losses); `keep` (..., Q) masks out queries."""
        loss = classification_loss(self.loss_cfg.cls, logits, onehot, iou, self.loss_cfg, self.alpha, self.gamma)
        if keep is not None:
            loss = loss * keep[..., None]
        return loss.sum() / norm

    def box_losses(self, pred: Tensor, target: Tensor, norm: float) -> tuple[Tensor, Tensor]:
        """L1 and GIoU of paired (N, 4) cxcywh boxes, summed and normalised."""
        l1 = (pred - target).abs().sum() / norm
        giou = generalized_box_iou_loss(
            box_convert(pred, "cxcywh", "xyxy"), box_convert(target, "cxcywh", "xyxy"), reduction="sum"
        ) / norm
        return l1, giou

    def weighted(self, cls: Tensor, l1: Tensor, giou: Tensor) -> Tensor:
        return self.weights[0] * cls + self.weights[1] * l1 + self.weights[2] * giou

    def set_loss(self, logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]], num_boxes: float):
        """Hungarian-matched (class, L1, GIoU) for one set of predictions (B, Q, C) / (B, Q, 4)."""
        logits, boxes = logits.float(), boxes.float()  # fp32 losses: focal/GIoU lose their small terms in bf16
        indices = self.matcher(logits.detach(), boxes.detach(), targets)
        batch = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)]).to(logits.device)
        src = torch.cat([s for s, _ in indices]).to(logits.device)
        labels = torch.cat([t["labels"].to(logits.device)[j] for t, (_, j) in zip(targets, indices)])
        tgt_boxes = torch.cat([t["boxes"].to(boxes.device)[j] for t, (_, j) in zip(targets, indices)])
        onehot = torch.zeros_like(logits)
        onehot[batch, src, labels] = 1.0
        iou = torch.zeros_like(logits[..., 0])  # (B, Q)
        if self.loss_cfg.cls != "focal":
            iou[batch, src] = pair_iou(boxes[batch, src].detach(), tgt_boxes.to(boxes.dtype))
        cls = self.class_loss(logits, onehot, iou, None, num_boxes)
        l1, giou = self.box_losses(boxes[batch, src], tgt_boxes.to(boxes.dtype), num_boxes)
        keep_in_graph = boxes.sum() * 0.0  # no boxes at all: the box head still gets a (zero) gradient
        return cls, l1 + keep_in_graph, giou

    def denoising_loss(self, dn: DenoisingOutputs, num_boxes: float) -> tuple[Tensor, Tensor]:
        """Weighted denoising loss over all layers; with two draws, the lower draw's.

        Returns (loss, index of the draw kept).
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
            onehot = torch.zeros_like(logits[0])
            onehot[supervised] = nn.functional.one_hot(labels[supervised], self.num_classes).to(onehot.dtype)
            norm = num_boxes * q.groups
            total = logits.new_zeros(())
            for layer in range(logits.shape[0]):
                iou = torch.zeros_like(logits[layer][..., 0])  # (B, Pd)
                if self.loss_cfg.cls != "focal":
                    iou[supervised] = pair_iou(boxes[layer][supervised].detach(), tgt_boxes[supervised])
                cls = self.class_loss(logits[layer], onehot, iou, valid.to(logits.dtype), norm)
                l1, giou = self.box_losses(boxes[layer][supervised], tgt_boxes[supervised], norm)
                total = total + self.weighted(cls, l1, giou)
            per_draw.append(total)
        losses = torch.stack(per_draw)
        kept = int(losses.detach().argmin())
        return losses[kept], kept

    # ------------------------------------------------------------------ total

    def deep_loss(self, outputs: dict, targets: list[dict[str, Tensor]], num_boxes: float) -> Tensor:
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


def count_boxes(targets: list[dict[str, Tensor]], device: torch.device) -> float:
    """Ground-truth boxes in the batch, averaged over processes; at least 1."""
    n = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n)
        n = n / dist.get_world_size()
    return max(float(n.item()), 1.0)


def build_criterion(cfg: ModelConfig, loss: LossConfig | None = None) -> SetCriterion:
    return SetCriterion(cfg, loss)
