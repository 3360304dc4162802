"""Tiny configurations and batches shared by the model tests."""

from __future__ import annotations

import torch

from dinokit.config import ModelConfig


def micro_config(**overrides) -> ModelConfig:
    """A DINO small enough for a forward+backward in well under a second on one CPU core."""
    cfg = ModelConfig(
        num_classes=5, backbone="resnet18", num_feature_levels=4, hidden_dim=32, nheads=2,
        enc_layers=1, dec_layers=3, dim_feedforward=64, enc_points=2, dec_points=2,
        num_queries=12, dn_number=8, num_select=20,
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def make_targets(counts: list[int], num_classes: int = 5, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Random well-formed cxcywh boxes inside the image, `counts[b]` per image."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in counts:
        wh = 0.1 + 0.3 * torch.rand(n, 2, generator=g)
        c = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=g)
        out.append({"boxes": torch.cat((c, wh), -1), "labels": torch.randint(0, num_classes, (n,), generator=g)})
    return out
