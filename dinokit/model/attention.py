"""Cross-attention over the multi-scale memory: deformable (default) or dense, one interface.

Both take the same arguments so that the encoder and decoder never test which one they hold:
    query            (B, Q, D)       queries (with their position embedding added)
    reference_points (B, Q, L, 2|4)  normalised (x, y) or (cx, cy, w, h) per level
    value            (B, S, D)       flattened memory, S = sum over levels of H_l * W_l
    value_pos        (B, S, D)       memory position embedding (dense keys use it)
    spatial_shapes   list of L       (H_l, W_l) per level, read off tensor sizes (traced when exported)
    padding_mask     (B, S) bool     True on padded memory positions
and return (B, Q, D).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dinokit.config import ModelConfig
from dinokit.model.heads import as_fp32
from dinokit.model.sampling import Shapes, deformable_sampling, level_table


class SamplingStep(nn.Module):
    """`deformable_sampling` as a module without parameters, so that a forward hook sees the exact
    locations (B, Q, M, L, P, 2) and weights (B, Q, M, L, P) the attention used (dinokit explain)."""

    def forward(self, value: Tensor, shapes: Shapes, locations: Tensor, weights: Tensor) -> Tensor:
        return deformable_sampling(value, shapes, locations, weights)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable DETR attention: each head samples `points` locations per level around the reference."""

    def __init__(self, dim: int, heads: int, levels: int, points: int) -> None:
        super().__init__()
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.sampling = SamplingStep()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start on rings around the reference, one direction per head (as the paper)."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2)
        grid = grid.repeat(1, self.levels, self.points, 1)
        grid = grid * torch.arange(1, self.points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        value_pos: Tensor | None,
        spatial_shapes: Shapes,
        padding_mask: Tensor | None,
    ) -> Tensor:
        B, Q, _ = query.shape
        M, L, P = self.heads, self.levels, self.points
        v = self.value_proj(value)
        if padding_mask is not None:
            v = v.masked_fill(padding_mask[..., None], 0.0)
        v = v.view(B, v.shape[1], M, -1)
        # offsets and the softmax of the weights in fp32 under autocast: they feed the fp32 sampling
        offsets = as_fp32(self.sampling_offsets(query)).view(B, Q, M, L, P, 2)
        weights = as_fp32(self.attention_weights(query)).view(B, Q, M, L * P).softmax(-1).view(B, Q, M, L, P)
        if reference_points.shape[-1] == 2:
            normaliser = level_table(spatial_shapes, offsets.device).flip(-1).to(offsets)  # (L, 2) as (W, H)
            locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        else:  # boxes: offsets scale with the box size
            ref = reference_points[:, :, None, :, None, :]
            locations = ref[..., :2] + offsets / P * ref[..., 2:] * 0.5
        return self.output_proj(self.sampling(v, spatial_shapes, locations, weights))


class DenseAttention(nn.Module):
    """Plain multi-head attention over every memory token (the seed notes' formulation)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        value_pos: Tensor | None,
        spatial_shapes: Shapes,
        padding_mask: Tensor | None,
    ) -> Tensor:
        key = value if value_pos is None else value + value_pos
        return self.attn(query, key, value, key_padding_mask=padding_mask, need_weights=False)[0]


def build_attention(cfg: ModelConfig, points: int) -> nn.Module:
    if cfg.attention == "dense":
        return DenseAttention(cfg.hidden_dim, cfg.nheads)
    return MultiScaleDeformableAttention(cfg.hidden_dim, cfg.nheads, cfg.num_feature_levels, points)
