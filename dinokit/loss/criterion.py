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

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.profiler import record_function
from torchvision.ops import box_convert

from dinokit.config import LossConfig, ModelConfig
from dinokit.loss.boxes import iou_giou
from dinokit.loss.classification import classification_loss
from dinokit.loss.matcher import HungarianMatcher
from dinokit.model.denoising import GroundTruth, pad_targets
from dinokit.model.dino import DenoisingOutputs
from dinokit.model.groups import repeat_targets

Norm = float | Tensor  # a loss normaliser: a number, or a 0-dim tensor on the losses' device


class SetCriterion(nn.Module):
    """The loss in three steps, so that torch.compile can take the tensor parts whole
    (training/compiled.py): `matcher.costs` (device) -> `matcher.assign` (host: scipy, by design
    outside any graph) -> `matched_loss` / `denoising_loss` (device, fixed shapes: the ground
    truth is padded, the matches are dense (B, G) tensors, no boolean indexing)."""

    def __init__(self, cfg: ModelConfig, loss: LossConfig | None = None) -> None:
        super().__init__()
        self.loss_cfg = loss if loss is not None else LossConfig()
        self.query_groups, self.one_to_many_k = cfg.query_groups, cfg.one_to_many_k
        self.matcher = HungarianMatcher(cfg.cost_class, cfg.cost_bbox, cfg.cost_giou, cfg.focal_alpha, cfg.focal_gamma,
                                        cfg.position_cost, cfg.iou_cost_power)
        # Stable-DINO supervises its denoising queries with the focal loss, not the position-supervised one
        self.dn_cls = "focal" if self.loss_cfg.cls == "stable" else self.loss_cfg.cls
        self.num_classes = cfg.num_classes
        self.alpha, self.gamma = cfg.focal_alpha, cfg.focal_gamma
        self.weights = (cfg.loss_class, cfg.loss_bbox, cfg.loss_giou)
        self.neg_target = cfg.neg_target

    # ------------------------------------------------------------------ pieces

    def class_loss(self, logits: Tensor, onehot: Tensor, iou: Tensor, keep: Tensor | None, norm: Norm,
                   kind: str | None = None) -> Tensor:
        """LossConfig.cls (or `kind`) summed over queries and classes; iou (..., Q) of each query's box
        with its target (IoU-aware losses); `keep` (..., Q) masks out queries."""
        kind = kind or self.loss_cfg.cls
        loss = classification_loss(kind, logits, onehot, iou, self.loss_cfg, self.alpha, self.gamma)
        if keep is not None:
            loss = loss * keep[..., None]
        return loss.sum() / norm

    def box_losses(self, pred: Tensor, target: Tensor, keep: Tensor, norm: Norm) -> tuple[Tensor, Tensor, Tensor]:
        """L1 and GIoU of paired (..., 4) cxcywh boxes over the pairs `keep` (...) marks, summed and
        normalised; and each pair's IoU (...), for the IoU-aware class losses."""
        l1 = ((pred - target).abs().sum(-1) * keep).sum() / norm
        iou, giou = iou_giou(box_convert(pred, "cxcywh", "xyxy"), box_convert(target, "cxcywh", "xyxy"))
        return l1, ((1 - giou) * keep).sum() / norm, iou

    def weighted(self, cls: Tensor, l1: Tensor, giou: Tensor) -> Tensor:
        return self.weights[0] * cls + self.weights[1] * l1 + self.weights[2] * giou

    def match(self, logits: Tensor, boxes: Tensor, gt: GroundTruth) -> tuple[Tensor, Tensor]:
        """Hungarian matches of one set as dense (B, G) tensors on the device: the query of each
        ground-truth slot (int64) and whether the slot was matched (bool). One host transfer."""
        with record_function("dinokit.matcher"):
            src, hit = self.matcher.assign(self.matcher.costs(logits, boxes, gt), gt.valid)
            both = torch.from_numpy(np.stack((src, hit.astype(np.int64))))  # (2, B, G), one copy
            src_t, hit_t = both.to(boxes.device, non_blocking=True).unbind(0)
        return src_t, hit_t.bool()

    def matched_loss(self, logits: Tensor, boxes: Tensor, gt: GroundTruth, src: Tensor, hit: Tensor, norm: Norm):
        """(class, L1, GIoU) of one set (B, Q, C) / (B, Q, 4) given its matches src / hit (B, G)."""
        logits, boxes = logits.float(), boxes.float()  # fp32 losses: focal/GIoU lose their small terms in bf16
        keep = hit.to(logits.dtype)  # (B, G)
        image = torch.arange(src.shape[0], device=src.device)[:, None].expand_as(src)  # (B, G)
        onehot = torch.zeros_like(logits).index_put_((image, src, gt.labels), keep, accumulate=True)  # (B, Q, C)
        picked = boxes.gather(1, src[..., None].expand(-1, -1, 4))  # (B, G, 4) the matched queries' boxes
        l1, giou, pair_iou_ = self.box_losses(picked, gt.boxes.to(boxes.dtype), keep, norm)
        iou = torch.zeros_like(logits[..., 0])  # (B, Q)
        if self.loss_cfg.cls != "focal":
            iou = iou.index_put((image, src), pair_iou_.detach() * keep, accumulate=True)
        cls = self.class_loss(logits, onehot, iou, None, norm)
        keep_in_graph = boxes.sum() * 0.0  # no boxes at all: the box head still gets a (zero) gradient
        return cls, l1 + keep_in_graph, giou

    def set_loss(self, logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]] | GroundTruth, num_boxes: Norm):
        """Hungarian-matched (class, L1, GIoU) for one set of predictions (B, Q, C) / (B, Q, 4)."""
        gt = targets if isinstance(targets, GroundTruth) else pad_targets(targets, boxes.device)
        return self.matched_loss(logits, boxes, gt, *self.match(logits, boxes, gt), num_boxes)

    def denoising_loss(self, dn: DenoisingOutputs, num_boxes: Norm) -> tuple[Tensor, Tensor]:
        """Weighted denoising loss over all layers; with two draws, the lower draw's.

        Returns (loss, index of the draw kept, a 0-dim tensor: choosing it reads nothing on the host).
        Supervised slots are a mask, never indices: no host read and no data-dependent shape.
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
            keep = supervised.to(logits.dtype)  # (B, Pd)
            classes = torch.arange(logits.shape[-1], device=labels.device)  # not F.one_hot: it reads max()
            onehot = (labels[..., None] == classes).to(logits.dtype) * keep[..., None]  # (B, Pd, C)
            norm = num_boxes * q.groups
            total = logits.new_zeros(())
            for layer in range(logits.shape[0]):
                l1, giou, pair = self.box_losses(boxes[layer], tgt_boxes, keep, norm)
                iou = pair.detach() * keep if self.dn_cls != "focal" else torch.zeros_like(keep)
                cls = self.class_loss(logits[layer], onehot, iou, valid.to(logits.dtype), norm, self.dn_cls)
                total = total + self.weighted(cls, l1, giou)
            per_draw.append(total)
        losses = torch.stack(per_draw)
        kept = losses.detach().argmin()
        return losses.index_select(0, kept.view(1))[0], kept

    # ------------------------------------------------------------------ total

    def deep_loss(self, outputs: dict, gt: GroundTruth, num_boxes: Norm) -> Tensor:
        """Weighted matched loss of one query set over its last and auxiliary layers."""
        total = self.weighted(*self.set_loss(outputs["pred_logits"], outputs["pred_boxes"], gt, num_boxes))
        for layer in outputs.get("aux_outputs", []):
            total = total + self.weighted(*self.set_loss(layer["pred_logits"], layer["pred_boxes"], gt, num_boxes))
        return total

    def forward(
        self, outputs: dict, targets: list[dict[str, Tensor]], gt: GroundTruth | None = None
    ) -> dict[str, Tensor]:
        """The weighted total under "loss" (to backpropagate) and detached parts for logging.
        `gt`: the targets already padded (compiled training pads them to a bucket)."""
        device = outputs["pred_logits"].device
        # the losses and the matcher's costs stay fp32 under autocast: log/exp of focal terms and
        # GIoU's areas underflow or round away in bf16/fp16
        with torch.autocast(device.type, enabled=False), record_function("dinokit.criterion"):
            return self._losses(outputs, targets, gt if gt is not None else pad_targets(targets, device), device)

    def _losses(
        self, outputs: dict, targets: list[dict[str, Tensor]], gt: GroundTruth, device: torch.device
    ) -> dict[str, Tensor]:
        num_boxes = count_boxes(targets, device)
        groups = 1 + len(outputs.get("group_outputs") or [])
        norm = num_boxes * groups  # Group DETR: the groups' losses average
        cls, l1, giou = self.set_loss(outputs["pred_logits"], outputs["pred_boxes"], gt, norm)
        loss = self.weighted(cls, l1, giou)
        parts = {"loss_class": cls, "loss_bbox": l1, "loss_giou": giou}
        aux = loss.new_zeros(())
        for layer in outputs.get("aux_outputs", []):
            aux = aux + self.weighted(*self.set_loss(layer["pred_logits"], layer["pred_boxes"], gt, norm))
        parts["loss_aux"] = aux
        if outputs.get("enc_outputs") is not None:
            enc = outputs["enc_outputs"]
            parts["loss_enc"] = self.weighted(*self.set_loss(enc["pred_logits"], enc["pred_boxes"], gt, num_boxes))
        if outputs.get("dn") is not None:
            parts["loss_dn"], parts["dn_draw"] = self.denoising_loss(outputs["dn"], num_boxes)
        if groups > 1:
            parts["loss_groups"] = sum(self.deep_loss(g, gt, norm) for g in outputs["group_outputs"])
        if outputs.get("one_to_many") is not None:
            repeated = count_boxes(repeat_targets(targets, self.one_to_many_k), device)
            parts["loss_one_to_many"] = self.deep_loss(outputs["one_to_many"], gt.repeat(self.one_to_many_k), repeated)
        total = loss + aux + sum(parts.get(k, 0.0) for k in ("loss_enc", "loss_dn", "loss_groups", "loss_one_to_many"))
        out = {"loss": total}
        out.update({k: (v.detach() if isinstance(v, Tensor) else torch.tensor(v)) for k, v in parts.items()})
        return out


def giou_loss_sum(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """sum(1 - GIoU) of paired xyxy boxes (N, 4): torchvision's generalized_box_iou_loss(reduction=
    "sum") in value and gradient, but the empty intersections are masked with `where`, not by
    boolean indexing (each x[mask] is a host sync on CUDA: five per call, ~35 calls a step)."""
    return (1 - iou_giou(a, b, eps)[1]).sum()


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


def build_criterion(cfg: ModelConfig, loss: LossConfig | None = None) -> SetCriterion:
    return SetCriterion(cfg, loss)
