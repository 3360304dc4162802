"""Decoder: self-attention, cross-attention, FFN; iterative box refinement; look-forward-twice.

Every layer refines the reference box of the previous layer: new = sigmoid(box_head(out) +
inverse_sigmoid(ref)). The next layer takes that box detached as its reference. The box each
layer *predicts* is built on the previous layer's refined box:
    lft=True  (look forward twice): undetached, so layer i's loss also corrects layer i-1's box;
    lft=False (look forward once, Deformable DETR): detached.
As the official code, the reference uses the layer output before the final norm and the
prediction uses the normed output; the class and box heads are shared by all layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinokit.config import ModelConfig
from dinokit.model.attention import Shapes, build_attention
from dinokit.model.heads import MLP, as_fp32, box_head, fp32_region, inverse_sigmoid
from dinokit.model.position import box_sine_embedding


@dataclass
class DecoderOutput:
    logits: Tensor  # (layers, B, Q, C)
    boxes: Tensor  # (layers, B, Q, 4) cxcywh in [0, 1]
    refined: list[Tensor]  # per layer but the last (B, Q, 4): the undetached refined box handed to the next layer


class DecoderLayer(nn.Module):
    """Official names and order: self_attn -> norm2, cross_attn -> norm1, linear1/2 -> norm3."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.cross_attn = build_attention(cfg, cfg.dec_points)
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, cfg.nheads, dropout=cfg.dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, cfg.dim_feedforward)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d)
        self.norm3 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        shapes: Shapes,
        memory_mask: Tensor,
        allowed: Tensor | SplitMask | None,
    ) -> Tensor:
        """tgt, query_pos (B, Q, D); reference_points (B, Q, L, 4); memory (B, S, D) -> (B, Q, D);
        allowed (B, 1, Q, Q) bool, True where a query may attend (None: everywhere), or a
        SplitMask (see split_self_attention_mask)."""
        sa = self.query_self_attention(tgt + query_pos, tgt, allowed)
        tgt = self.norm2(tgt + self.dropout(sa))
        ca = self.cross_attn(tgt + query_pos, reference_points, memory, memory_pos, shapes, memory_mask)
        tgt = self.norm1(tgt + self.dropout(ca))
        ffn = self.linear2(self.dropout(torch.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(ffn))


    def query_self_attention(self, qk: Tensor, value: Tensor, allowed: Tensor | SplitMask | None) -> Tensor:
        """nn.MultiheadAttention's computation with its parameters (official names), through
        scaled_dot_product_attention with one boolean mask shared by every layer and head:
        MultiheadAttention would merge the denoising and padding masks into a (B * heads, Q, Q)
        float mask per layer and keep it for backward (77 MB per layer at 1,100 queries).
        With a SplitMask the matching queries attend among themselves only, without the
        denoising keys they may not see anyway (exact: those keys get zero weight)."""
        attn = self.self_attn
        B, Q, D = qk.shape
        H = attn.num_heads
        q, k = F.linear(qk, attn.in_proj_weight[: 2 * D], attn.in_proj_bias[: 2 * D]).chunk(2, -1)
        v = F.linear(value, attn.in_proj_weight[2 * D:], attn.in_proj_bias[2 * D:])
        q, k, v = [t.view(B, Q, H, D // H).transpose(1, 2) for t in (q, k, v)]  # (B, H, Q, Dh)
        dropout = attn.dropout if self.training else 0.0
        if isinstance(allowed, SplitMask):
            P = allowed.dn_size
            dn = attention(q[:, :, :P], k, v, allowed.dn_rows, dropout)
            matching = attention(q[:, :, P:], k[:, :, P:], v[:, :, P:], allowed.matching, dropout)
            out = torch.cat((dn, matching), 2)  # (B, H, Q, Dh)
        else:
            out = attention(q, k, v, allowed, dropout)
        return attn.out_proj(out.transpose(1, 2).reshape(B, Q, D))


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float) -> Tensor:
    """scaled_dot_product_attention; q (B, H, Q, Dh), k/v (B, H, K, Dh) -> (B, H, Q, Dh) in q's dtype.
    On the CPU a bf16/fp16 SDPA is about 2x slower than fp32 (forward + backward, measured in
    the precision profile), so under autocast there it runs in fp32 and casts back; on CUDA the
    low-precision kernels are the fast ones and stay."""
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    with fp32_region(q):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout)
    return out.to(q.dtype)


@dataclass
class SplitMask:
    """The self-attention mask in two exact parts, when the first `dn_size` (denoising) queries
    are invisible to the rest: dn_rows (B, 1, P, Q) for the denoising queries over all keys,
    matching (1, 1, T, T) among the T matching queries (None: no block is masked)."""

    dn_size: int
    dn_rows: Tensor
    matching: Tensor | None


def split_self_attention_mask(
    allowed: Tensor | None, dn_size: int, matching_free: bool | None = None
) -> Tensor | SplitMask | None:
    """A SplitMask from the full (B, 1, P + T, P + T) mask when the split is exact: the matching
    queries see no denoising key and no key padding (padding is on denoising slots only);
    otherwise the full mask unchanged. `matching_free`: whether the matching block is known to
    mask nothing (None: read it from the mask, one host read)."""
    if allowed is None or dn_size <= 0:
        return allowed
    matching = allowed[:1, :, dn_size:, dn_size:]  # the same for every image: no padding there
    free = bool(matching.all()) if matching_free is None else matching_free
    return SplitMask(dn_size, allowed[:, :, :dn_size], None if free else matching)


def self_attention_mask(
    attn_mask: Tensor | None, query_padding: Tensor | None, batch: int, queries: int
) -> Tensor | None:
    """(B, 1, Q, Q) bool, True where a query may attend, from the (Q, Q) denoising mask and the
    (B, Q) padded-slot mask (both True where blocked); None when nothing is blocked. Built once
    and shared by every layer and head."""
    if attn_mask is None and query_padding is None:
        return None
    device = (attn_mask if attn_mask is not None else query_padding).device
    blocked = torch.zeros(batch, 1, queries, queries, dtype=torch.bool, device=device)
    if attn_mask is not None:
        blocked |= attn_mask
    if query_padding is not None:
        blocked |= query_padding[:, None, None, :]
    return ~blocked


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.lft = cfg.lft
        self.split_self_attention = True  # False: one masked attention over all queries (the reference)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        self.norm = nn.LayerNorm(d)
        self.ref_point_head = MLP(2 * d, d, d, 2)
        self.class_head = nn.Linear(d, cfg.num_classes)  # shared by all layers
        self.box_head = box_head(d)  # shared by all layers
        nn.init.constant_(self.class_head.bias, -math.log((1 - 0.01) / 0.01))

    def forward(
        self,
        content: Tensor,
        anchors: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        shapes: Shapes,
        valid_ratios: Tensor,
        memory_mask: Tensor,
        attn_mask: Tensor | None = None,
        query_padding: Tensor | None = None,
        dn_size: int = 0,
        matching_free: bool | None = None,
    ) -> DecoderOutput:
        """content (B, Q, D); anchors (B, Q, 4) inverse-sigmoid cxcywh; valid_ratios (B, L, 2);
        dn_size: the leading denoising queries, which no later query may see (0: none);
        matching_free: the matching queries mask nothing among themselves (None: look)."""
        ratios = torch.cat((valid_ratios, valid_ratios), -1)[:, None]  # (B, 1, L, 4)
        half = content.shape[-1] // 2
        out = content
        reference = anchors.sigmoid()  # (B, Q, 4), input box of the current layer
        predicted_on = reference  # the box the current layer's prediction is built on
        logits, boxes, refined = [], [], []
        allowed = self_attention_mask(attn_mask, query_padding, content.shape[0], content.shape[1])
        if self.split_self_attention:
            allowed = split_self_attention_mask(allowed, dn_size, matching_free)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            ref_input = reference[:, :, None] * ratios  # (B, Q, L, 4)
            query_pos = self.ref_point_head(box_sine_embedding(ref_input[:, :, 0], half))
            out = layer(out, query_pos, ref_input, memory, memory_pos, shapes, memory_mask, allowed)
            # heads, inverse sigmoid and refinement in fp32 under autocast: deltas are added to
            # logits of up to +-6.9, where bf16 steps are ~0.03 (boxes would jitter by a pixel or more)
            with fp32_region(out):
                out32 = as_fp32(out)
                hs = self.norm(out32)
                logits.append(self.class_head(hs))
                boxes.append((self.box_head(hs) + inverse_sigmoid(predicted_on)).sigmoid())
                if i == last:  # no layer reads the last refinement (the official code computes and drops it)
                    break
                new_reference = (self.box_head(out32) + inverse_sigmoid(reference)).sigmoid()
            refined.append(new_reference)
            reference = new_reference.detach()
            predicted_on = new_reference if self.lft else reference
        return DecoderOutput(torch.stack(logits), torch.stack(boxes), refined)
