"""Parameter counts per part and the FLOPs of one inference, for `dinokit info`."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from dinokit.config import Config
from dinokit.model.dino import DINO, build_model

# part name -> parameter-name prefixes, in the order printed
PARTS: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone.",),
    "input projections": ("input_proj.",),
    "encoder": ("encoder.",),
    "decoder": ("decoder.layers.", "decoder.norm.", "decoder.ref_point_head."),
    "heads": ("decoder.class_head.", "decoder.box_head.", "queries.enc_"),
    "embeddings": ("level_embed", "queries.tgt_embed.", "queries.refpoint_embed.", "denoising.label_enc."),
}


def parameter_counts(model: DINO) -> dict[str, int]:
    """Unique parameters per part (shared heads counted once), plus total and trainable."""
    counts = dict.fromkeys(PARTS, 0)
    total = trainable = 0
    for name, p in model.named_parameters():  # named_parameters() already skips shared duplicates
        part = next((k for k, prefixes in PARTS.items() if name.startswith(prefixes)), None)
        if part is None:
            raise AssertionError(f"parameter {name} belongs to no part")
        counts[part] += p.numel()
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    counts["total"] = total
    counts["trainable"] = trainable
    return counts


def inference_gflops(model: DINO, size: tuple[int, int]) -> float:
    """GFLOPs (multiply-adds counted as 2) of one eval-mode forward at (H, W)."""
    model.eval()
    images = torch.rand(1, 3, *size)
    with FlopCounterMode(display=False) as counter:  # (no_grad trips its module tracker)
        model(images)
    return counter.get_total_flops() / 1e9


def model_summary(cfg: Config, size: tuple[int, int] | None = None) -> dict:
    """Counts and GFLOPs for a configuration, built without fetching pretrained weights."""
    model = build_model(cfg.model, load_weights=False)
    size = size or (cfg.data.image_size, cfg.data.image_size)
    return {
        "preset_backbone": cfg.model.backbone,
        "training_aids": training_aids(cfg),
        "parameters": parameter_counts(model),
        "size": list(size),
        "gflops": inference_gflops(model, size),
    }


def training_aids(cfg: Config) -> str:
    """Which training-only aids a configuration uses ("none" for the paper's DINO)."""
    m = cfg.model
    aids = []
    if m.query_groups > 1:
        aids.append(f"query groups x{m.query_groups}")
    if m.one_to_many_queries > 0:
        aids.append(f"one-to-many {m.one_to_many_queries} queries, k={m.one_to_many_k}")
    if cfg.loss.cls != "focal":
        aids.append(f"{cfg.loss.cls} class loss")
    if m.position_cost > 0:
        aids.append(f"position-modulated cost {m.position_cost:g}")
    if m.iou_cost_from > 0:
        aids.append(f"IoU cost from {m.iou_cost_from:g} of the budget (IoU^{m.iou_cost_power:g})")
    d = cfg.data
    if d.mosaic > 0:
        aids.append(f"mosaic p={d.mosaic:g}")
    if d.copy_blend > 0:
        aids.append(f"copy-blend p={d.copy_blend:g} x{d.copy_blend_objects}")
    if cfg.train.no_aug_from > 0:
        aids.append(f"no strong augmentation + EMA restart from {cfg.train.no_aug_from:g} of the budget")
    return ", ".join(aids) or "none"
