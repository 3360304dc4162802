"""Transformer encoder over the flattened multi-scale features.

Post-norm layers with the official parameter names (self_attn, norm1, linear1, linear2, norm2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dinokit.config import ModelConfig
from dinokit.model.attention import Shapes, build_attention


_FFN_BLOCK = 2048  # tokens per feed-forward block at inference: a (2048, 2048) float block is 16 MB


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = build_attention(cfg, cfg.enc_points)
        self.norm1 = nn.LayerNorm(cfg.hidden_dim)
        self.linear1 = nn.Linear(cfg.hidden_dim, cfg.dim_feedforward)
        self.linear2 = nn.Linear(cfg.dim_feedforward, cfg.hidden_dim)
        self.norm2 = nn.LayerNorm(cfg.hidden_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.checkpoint_ffn = cfg.checkpoint_ffn

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, shapes: Shapes, mask: Tensor) -> Tensor:
        """src, pos (B, S, D); reference_points (B, S, L, 2); returns (B, S, D)."""
        attn = self.self_attn(src + pos, reference_points, src, pos, shapes, mask)
        if torch.is_grad_enabled() or torch.jit.is_tracing():  # a traced loop would fix the block count
            return self.residual_ffn(src, attn)
        # Without autograd, rows are independent: run the feed-forward in blocks of tokens so that
        # the (tokens, dim_feedforward) intermediate stays in cache instead of streaming through
        # memory (at 800x1216 it is 20k x 2048 floats, 165 MB, per layer).
        flat_src, flat_attn = src.reshape(-1, src.shape[-1]), attn.reshape(-1, attn.shape[-1])
        out = torch.empty_like(flat_src)
        for start in range(0, flat_src.shape[0], _FFN_BLOCK):
            rows = slice(start, start + _FFN_BLOCK)
            out[rows] = self.residual_ffn(flat_src[rows], flat_attn[rows])
        return out.view_as(src)

    def residual_ffn(self, src: Tensor, attn: Tensor) -> Tensor:
        src = self.norm1(src + self.dropout(attn))
        if self.checkpoint_ffn and src.requires_grad and not torch.jit.is_tracing():
            # r50 at 2x512: the six hidden layers are (2, 5440, 2048) floats, 85 MB each
            ffn = checkpoint(self.ffn, src, use_reentrant=False)  # saves src only; dropout's RNG replayed
        else:
            ffn = self.ffn(src)
        return self.norm2(src + self.dropout(ffn))

    def ffn(self, src: Tensor) -> Tensor:
        """(..., D) -> (..., D) through the (..., dim_feedforward) hidden layer.

        On 2-D rows: `linear` returns a view for 3-D inputs, and an in-place ReLU on a view makes
        autograd copy the whole hidden gradient back and forth (CopySlices; ~9% of this function's
        forward + backward at r50 2x512). In place on a plain tensor, one hidden buffer is kept."""
        rows = src.reshape(-1, src.shape[-1])  # (N, D)
        hidden = torch.relu_(self.linear1(rows))  # (N, dim_feedforward)
        return self.linear2(self.dropout(hidden)).view(src.shape)


def encoder_reference_points(shapes: Shapes, valid_ratios: Tensor) -> Tensor:
    """Pixel centres of every level, in the padded image's [0, 1] frame, for every level.

    shapes [(H, W)] per level; valid_ratios (B, L, 2) (w, h) fraction of each map that is image.
    Returns (B, S, L, 2) (x, y).
    """
    refs = []
    for lvl, (h, w) in enumerate(shapes):
        # arange + 0.5 equals the official linspace(0.5, h - 0.5, h) exactly and exports with symbolic sizes
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=valid_ratios.device) + 0.5,
            torch.arange(w, dtype=torch.float32, device=valid_ratios.device) + 0.5,
            indexing="ij",
        )
        ys = ys.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
        xs = xs.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
        refs.append(torch.stack((xs, ys), -1))
    ref = torch.cat(refs, 1)  # (B, S, 2) relative to each level's valid region
    return ref[:, :, None] * valid_ratios[:, None]


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))

    def forward(self, src: Tensor, pos: Tensor, shapes: Shapes, valid_ratios: Tensor, mask: Tensor) -> Tensor:
        """src, pos (B, S, D); mask (B, S) True on padding -> memory (B, S, D)."""
        reference_points = encoder_reference_points(shapes, valid_ratios)
        for layer in self.layers:
            src = layer(src, pos, reference_points, shapes, mask)
        return src
