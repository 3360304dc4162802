"""Classification losses on the same sigmoid logits (LossConfig.cls).

focal  : sigmoid focal loss (DINO).
vfl    : varifocal loss as in RT-DETR: the positive target is the matched box's IoU; negatives are
         weighted alpha * p^gamma.
ia-bce : IoU-aware BCE of Align-DETR: positive target s^a * IoU^(1 - a) (s the detached score);
         negatives weighted s^gamma.
mal    : the matchability-aware loss of DEIM: positive target IoU^g, positive weight 1; negatives
         weighted s^g (g = mal_gamma).
stable : Stable-DINO's position-supervised loss (arXiv 2304.04742): positive target t = IoU^b
         (b = stable_power, 2), scaled per image so that its best positive has t = 1 (their
         code's normalisation), positive weight alpha |t - s|^gamma, negatives (1 - alpha) s^gamma
         (the focal loss's alpha and gamma). Stable-DINO keeps the focal loss on the denoising
         queries (loss/criterion.py does too).
The IoU-aware losses let the score follow localisation quality, which the focal loss ignores.
Every loss returns per-element values (..., Q, C); the criterion masks, sums and normalises.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from dinokit.config import LossConfig


def classification_loss(
    kind: str, logits: Tensor, onehot: Tensor, iou: Tensor, cfg: LossConfig, alpha: float, gamma: float
) -> Tensor:
    """logits, onehot (..., Q, C); iou (..., Q) each query's IoU with its matched box (0 if
    unmatched; detached). alpha, gamma: the focal loss's (ModelConfig.focal_alpha / focal_gamma)."""
    if kind == "focal":
        return sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma, reduction="none")
    score = logits.sigmoid().detach()
    quality = iou.detach()[..., None].to(logits.dtype) * onehot  # IoU on the matched class, else 0
    if kind == "vfl":
        target = quality
        weight = cfg.vfl_alpha * score.pow(gamma) * (1 - onehot) + quality
    elif kind == "ia-bce":
        target = score.pow(cfg.iabce_alpha) * quality.pow(1 - cfg.iabce_alpha) * onehot
        weight = score.pow(gamma) * (1 - onehot) + onehot
    elif kind == "mal":
        target = quality.pow(cfg.mal_gamma)
        weight = score.pow(cfg.mal_gamma) * (1 - onehot) + onehot
    elif kind == "stable":
        target = quality.pow(cfg.stable_power)  # (..., Q, C)
        best = target.flatten(-2).amax(-1)[..., None, None]  # per image
        target = target * (1.0 / (best + 1e-8)).clamp(min=1.0)
        weight = alpha * (target - score).abs().pow(gamma) * onehot + (1 - alpha) * score.pow(gamma) * (1 - onehot)
    else:
        raise ValueError(f"unknown classification loss '{kind}'")
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")
