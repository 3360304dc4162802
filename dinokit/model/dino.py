"""The DINO detector, assembled from ModelConfig.

image + mask -> backbone -> input projections (+ extra levels) -> positions -> encoder ->
query selection (+ denoising groups) -> decoder -> outputs for the criterion or postprocess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import record_function
from torch import Tensor, nn

from dinokit.config import ModelConfig
from dinokit.model.backbone import Backbone
from dinokit.model.decoder import Decoder
from dinokit.model.denoising import Denoising, DenoisingQueries, GroundTruth
from dinokit.model.encoder import Encoder
from dinokit.model.groups import QueryLayout, attention_mask
from dinokit.model.position import SinePositionEmbedding
from dinokit.model.queries import QuerySelection
from dinokit.model.sampling import LevelShapes, level_table


@dataclass
class DenoisingOutputs:
    logits: Tensor  # (layers, B, P, C)
    boxes: Tensor  # (layers, B, P, 4) cxcywh in [0, 1]
    queries: DenoisingQueries


def _projection(in_channels: int, dim: int, extra: bool) -> nn.Sequential:
    """1x1 conv (or 3x3 stride-2 conv for an extra level) + GroupNorm, official init."""
    conv = nn.Conv2d(in_channels, dim, 3, stride=2, padding=1) if extra else nn.Conv2d(in_channels, dim, 1)
    nn.init.xavier_uniform_(conv.weight, gain=1)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.GroupNorm(math.gcd(32, dim), dim))


class DINO(nn.Module):
    def __init__(self, cfg: ModelConfig, load_weights: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        levels = cfg.num_feature_levels
        backbone_levels = levels - 1 if levels >= 4 else levels
        self.backbone = Backbone(cfg, backbone_levels, load_weights)
        chans = self.backbone.num_channels
        self.input_proj = nn.ModuleList(
            [_projection(c, cfg.hidden_dim, extra=False) for c in chans]
            + [_projection(chans[-1] if i == 0 else cfg.hidden_dim, cfg.hidden_dim, extra=True)
               for i in range(levels - backbone_levels)]
        )
        self.position = SinePositionEmbedding(cfg.hidden_dim // 2, cfg.pe_temperature)
        self.level_embed = nn.Parameter(torch.empty(levels, cfg.hidden_dim).normal_())
        self.encoder = Encoder(cfg)
        self.queries = QuerySelection(cfg)
        self.denoising = Denoising(cfg) if cfg.denoising != "none" else None
        self.decoder = Decoder(cfg)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    def multiscale(self, images: Tensor, masks: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Projected maps (B, D, H_l, W_l) and their padding masks (B, H_l, W_l), finest first."""
        x = ((images - self.pixel_mean) / self.pixel_std).masked_fill(masks[:, None], 0.0)
        feats = self.backbone(x)
        srcs = [proj(f) for proj, f in zip(self.input_proj, feats)]
        for proj in self.input_proj[len(feats):]:
            srcs.append(proj(feats[-1] if len(srcs) == len(feats) else srcs[-1]))
        level_masks = [F.interpolate(masks[None].float(), size=s.shape[-2:])[0].bool() for s in srcs]
        return srcs, level_masks

    def forward(
        self, images: Tensor, masks: Tensor | None = None,
        targets: list[dict[str, Tensor]] | GroundTruth | None = None,
    ) -> dict[str, Any]:
        """images (B, 3, H, W) in [0, 1]; masks (B, H, W) True on padding; targets (training) hold
        `boxes` (N, 4) cxcywh normalised to each unpadded image and `labels` (N,), or come padded
        as GroundTruth (compiled training: fixed shapes).

        The `dinokit.<part>` scopes name the parts in a torch.profiler trace (free without one).

        Returns pred_logits (B, K, C), pred_boxes (B, K, 4) cxcywh in [0, 1] of the unpadded image,
        aux_outputs (one dict per earlier decoder layer), enc_outputs (None for static queries),
        dn (DenoisingOutputs or None); in training with the aids also group_outputs (one set per
        extra query group) and one_to_many (a set, or None), each with the same three keys.
        """
        if masks is None:
            masks = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device)
        with record_function("dinokit.backbone"):
            srcs, level_masks = self.multiscale(images, masks)
            shapes = [(s.shape[-2], s.shape[-1]) for s in srcs]  # (H_l, W_l), symbolic in an ONNX export
            shapes = LevelShapes(shapes, level_table(shapes, images.device))  # on the device once per forward
            src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)  # (B, S, D)
            pos = torch.cat(
                [(self.position(m).flatten(2).transpose(1, 2) + self.level_embed[lvl])
                 for lvl, m in enumerate(level_masks)], 1
            )
            mask = torch.cat([m.flatten(1) for m in level_masks], 1)  # (B, S)
            valid_ratios = torch.stack(
                [torch.stack(((~m[:, 0, :]).sum(1) / m.shape[2], (~m[:, :, 0]).sum(1) / m.shape[1]), -1)
                 for m in level_masks], 1,
            ).to(src.dtype)  # (B, L, 2) as (w, h)

        with record_function("dinokit.encoder"):
            memory = self.encoder(src, pos, shapes, valid_ratios, mask)
        with record_function("dinokit.query_selection"):
            selected = self.queries(memory, mask, shapes)
        content, anchors = selected.content, selected.anchors  # (B, T, D), (B, T, 4)
        layout = selected.layout or QueryLayout(content.shape[1])
        T = content.shape[1]
        dn = None
        with record_function("dinokit.denoising"):
            if self.training and self.denoising is not None and targets is not None:
                dn = self.denoising(targets, T)
            attn_mask = query_padding = None
            if dn is not None:
                content = torch.cat((dn.content, content), 1)
                anchors = torch.cat((dn.anchors, anchors), 1)
                attn_mask = dn.attn_mask
                query_padding = torch.cat((dn.padding, torch.zeros_like(dn.padding[:, :1]).expand(-1, T)), 1)
            P = dn.size if dn is not None else 0
            attn_mask = attention_mask(layout, attn_mask, P, content.device)
        with record_function("dinokit.decoder"):
            # without the aids the matching queries see each other freely: known from the layout,
            # not read from the mask (a host read, and a graph break under torch.compile)
            dec = self.decoder(content, anchors, memory, pos, shapes, valid_ratios, mask, attn_mask, query_padding, P,
                               matching_free=not layout.has_aids)
        logits, boxes = dec.logits[:, :, P:], dec.boxes[:, :, P:]  # (layers, B, T, C | 4)
        if self.training and self.denoising is not None and dn is None:
            # a batch with no boxes: keep the label embedding in the graph (DistributedDataParallel)
            logits = logits + 0.0 * self.denoising.label_enc.weight[0, 0]
        group0 = layout.group_slice(0)
        out = _set_outputs(logits[:, :, group0], boxes[:, :, group0])
        out.update({
            "enc_outputs": selected.enc_outputs,
            "dn": DenoisingOutputs(dec.logits[:, :, :P], dec.boxes[:, :, :P], dn) if dn is not None else None,
            "refined": dec.refined,  # per layer but the last (B, P + T, 4), denoising queries first (for tests)
            # training-only aids (model/groups.py): groups 1.. and the one-to-many queries
            "group_outputs": [_set_outputs(logits[:, :, layout.group_slice(g)], boxes[:, :, layout.group_slice(g)])
                              for g in range(1, layout.groups)],
            "one_to_many": None,
        })
        if layout.one_to_many > 0:
            o2m = layout.one_to_many_slice()
            out["one_to_many"] = _set_outputs(logits[:, :, o2m], boxes[:, :, o2m])
        return out


def _set_outputs(logits: Tensor, boxes: Tensor) -> dict[str, Any]:
    """One query set's outputs from per-layer logits (layers, B, Q, C) and boxes (layers, B, Q, 4)."""
    return {
        "pred_logits": logits[-1],
        "pred_boxes": boxes[-1],
        "aux_outputs": [{"pred_logits": l, "pred_boxes": b} for l, b in zip(logits[:-1], boxes[:-1])],
    }


def build_model(cfg: ModelConfig, load_weights: bool = True) -> DINO:
    """The detector for a configuration. load_weights=False builds the pretrained structure
    (frozen BatchNorm, frozen stem) without fetching weights: for counting, or before loading
    a checkpoint."""
    return DINO(cfg, load_weights)
