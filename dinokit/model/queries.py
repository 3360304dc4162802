"""Query selection: where the decoder's queries come from (ModelConfig.queries).

mixed  : anchors from the top-K encoder proposals; content queries learned and static (DINO).
pure   : anchors and content both from the top-K encoder outputs (Deformable DETR two-stage).
static : learned anchors and content, no selection (DAB/DN-DETR).

In training with the aids (model/groups.py) the selection also returns the extra groups (the
same anchors, each group its own learned content; config refuses groups with pure queries,
whose groups would be identical copies) and the one-to-many
queries (the next-best M proposals; static: their own learned anchors and content).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dinokit.config import ModelConfig
from dinokit.model.attention import Shapes
from dinokit.model.groups import QueryLayout
from dinokit.model.heads import as_fp32, box_head, fp32_region


@dataclass
class SelectedQueries:
    content: Tensor  # (B, T, D) decoder input queries (T = K at inference, layout.total in training)
    anchors: Tensor  # (B, T, 4) inverse-sigmoid cxcywh, detached from the encoder
    enc_outputs: dict[str, Tensor] | None  # encoder proposals' logits (B, K, C) and boxes (B, K, 4)
    indices: Tensor | None = None  # (B, K) selected memory tokens, best first (to compare with other code)
    layout: QueryLayout | None = None  # how the T queries split into groups (None: K one-to-one)


def encoder_proposals(memory: Tensor, mask: Tensor, shapes: Shapes) -> tuple[Tensor, Tensor]:
    """One anchor per memory token: its cell centre, size 0.05 * 2^level (official two-stage).

    memory (B, S, D), mask (B, S) True on padding. Returns the memory with padded and border
    tokens zeroed (B, S, D) and the anchors in inverse-sigmoid space (B, S, 4), +inf where invalid.
    """
    B = memory.shape[0]
    proposals, start = [], 0
    for lvl, (h, w) in enumerate(shapes):
        level_mask = mask[:, start : start + h * w].view(B, h, w)
        valid_h = (~level_mask[:, :, 0]).sum(1)
        valid_w = (~level_mask[:, 0, :]).sum(1)
        ys, xs = torch.meshgrid(  # arange == the official linspace(0, h - 1, h), and it exports
            torch.arange(h, dtype=torch.float32, device=memory.device),
            torch.arange(w, dtype=torch.float32, device=memory.device),
            indexing="ij",
        )
        grid = torch.stack((xs, ys), -1)[None]  # (1, h, w, 2)
        scale = torch.stack((valid_w, valid_h), -1).view(B, 1, 1, 2).to(memory.dtype)
        grid = (grid + 0.5) / scale
        wh = torch.full_like(grid, 0.05 * (2.0**lvl))
        proposals.append(torch.cat((grid, wh), -1).view(B, -1, 4))
        start += h * w
    boxes = torch.cat(proposals, 1)
    valid = ((boxes > 0.01) & (boxes < 0.99)).all(-1, keepdim=True)
    anchors = torch.log(boxes / (1 - boxes))
    anchors = anchors.masked_fill(mask[..., None], math.inf).masked_fill(~valid, math.inf)
    memory = memory.masked_fill(mask[..., None], 0.0).masked_fill(~valid, 0.0)
    return memory, anchors


class QuerySelection(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.mode = cfg.queries
        self.num_queries = cfg.num_queries
        self.groups, self.one_to_many = cfg.query_groups, cfg.one_to_many_queries
        learned = cfg.num_queries * cfg.query_groups + cfg.one_to_many_queries  # rows of the embeddings
        d = cfg.hidden_dim
        if self.mode != "static":
            self.enc_output = nn.Linear(d, d)
            self.enc_output_norm = nn.LayerNorm(d)
            self.enc_class_head = nn.Linear(d, cfg.num_classes)
            self.enc_box_head = box_head(d)
            nn.init.constant_(self.enc_class_head.bias, -math.log((1 - 0.01) / 0.01))
        if self.mode != "pure":
            self.tgt_embed = nn.Embedding(learned, d)
            nn.init.normal_(self.tgt_embed.weight)
        if self.mode == "static":
            self.refpoint_embed = nn.Embedding(learned, 4)
            nn.init.uniform_(self.refpoint_embed.weight, -2.0, 2.0)

    def forward(self, memory: Tensor, mask: Tensor, shapes: Shapes) -> SelectedQueries:
        """memory (B, S, D), mask (B, S), shapes [(H, W)] per level -> K = num_queries decoder
        queries, plus the aids' queries in training (see `layout`)."""
        B = memory.shape[0]
        K = self.num_queries
        groups, extra = (self.groups, self.one_to_many) if self.training else (1, 0)
        if self.mode == "static":
            layout = QueryLayout(K, groups, extra)
            content = self.tgt_embed.weight[None, : layout.total].expand(B, -1, -1)
            anchors = self.refpoint_embed.weight[None, : layout.total].expand(B, -1, -1)
            return SelectedQueries(content, anchors, None, layout=layout)
        # proposals, their scores and the top-K in fp32 under autocast: bf16 scores tie and
        # reorder the top-K (a different query set changes every output downstream)
        with fp32_region(memory):
            return self._select(as_fp32(memory), mask, shapes, groups, extra)

    def _select(self, memory: Tensor, mask: Tensor, shapes: Shapes, groups: int, extra: int) -> SelectedQueries:
        """Two-stage selection (mixed, pure) from the encoder memory (B, S, D)."""
        B, K = memory.shape[0], self.num_queries
        out_memory, anchors_all = encoder_proposals(memory, mask, shapes)
        out_memory = self.enc_output_norm(self.enc_output(out_memory))
        logits = self.enc_class_head(out_memory)  # (B, S, C): every token is scored for the top-K
        k = min(K, logits.shape[1])
        k_all = min(K + extra, logits.shape[1])  # one-to-many: the next-best proposals after the top k
        order = logits.max(-1)[0].topk(k_all, dim=1)[1]  # (B, k_all), best first
        memory_all = out_memory.gather(1, order[..., None].expand(-1, -1, out_memory.shape[-1]))
        # boxes only for the selected tokens: the official code runs the box head on all S tokens
        # and gathers (the same values; 2 of the r50 step's GFLOP at 2x320, more at larger images)
        coords_all = self.enc_box_head(memory_all) + anchors_all.gather(1, order[..., None].expand(-1, -1, 4))
        topk, coords_k, memory_k = order[:, :k], coords_all[:, :k], memory_all[:, :k]
        enc_outputs = {"pred_logits": self.enc_class_head(memory_k), "pred_boxes": coords_k.sigmoid()}
        layout = QueryLayout(k, groups, k_all - k)
        anchors = torch.cat([coords_k] * groups + [coords_all[:, k:]], 1) if layout.has_aids else coords_k  # (B, T, 4)
        if self.mode == "mixed":
            w = self.tgt_embed.weight  # rows: group g at [g K, g K + K), one-to-many after K G
            parts = [w[g * K : g * K + k] for g in range(groups)] + [w[K * groups : K * groups + k_all - k]]
            content = (torch.cat(parts) if layout.has_aids else parts[0])[None].expand(B, -1, -1)
        else:
            content = (torch.cat([memory_k] * groups + [memory_all[:, k:]], 1) if layout.has_aids else memory_k).detach()
        return SelectedQueries(content, anchors.detach(), enc_outputs, topk, layout)
