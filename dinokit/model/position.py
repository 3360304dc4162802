"""Sine position embeddings: for feature maps (with padding masks) and for query boxes.

Both follow the official DINO formulas so that converted checkpoints reproduce its outputs:
sine on even channels and cosine on odd ones, interleaved; (y, x) order for maps and
(cy, cx, w, h) for boxes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _interleave(x: Tensor) -> Tensor:
    """(..., F) angles -> (..., F) with sin on even and cos on odd features, interleaved."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


class SinePositionEmbedding(nn.Module):
    """Normalised 2-D sine embedding of a feature map's valid region (DETR, temperature 20 in DINO)."""

    def __init__(self, num_feats: int, temperature: float = 20.0, scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, mask: Tensor) -> Tensor:
        """mask (B, H, W) bool, True on padding -> (B, 2 * num_feats, H, W)."""
        not_mask = ~mask
        y = not_mask.cumsum(1, dtype=torch.float32)
        x = not_mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y = y / (y[:, -1:, :] + eps) * self.scale
        x = x / (x[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_feats)
        pos_x = _interleave(x[..., None] / dim_t)  # (B, H, W, F)
        pos_y = _interleave(y[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def box_sine_embedding(boxes: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """boxes (..., 4) cxcywh in [0, 1] -> (..., 4 * num_feats) in (cy, cx, w, h) order.

    `num_feats` is hidden_dim // 2, as the official code at hidden 256 (128 per coordinate).
    """
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    angles = boxes[..., None] * (2 * math.pi) / dim_t  # (..., 4, F)
    emb = _interleave(angles)
    cx, cy, w, h = emb.unbind(-2)
    return torch.cat((cy, cx, w, h), dim=-1)
