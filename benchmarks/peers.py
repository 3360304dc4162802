"""The peer implementation that benchmarks/speed.py times next to dinokit: Hugging Face
transformers' Deformable DETR, set up as close to dinokit's r50-4scale as its options allow.

Matched: ResNet-50 (FrozenBatchNorm, stem and first stage frozen, stages 2-4 trained), 4 feature
levels, 256 channels, 8 heads, 6 + 6 layers with FFN 2048, 4 sampling points, dropout 0, two-stage
query selection with box refinement and 900 queries, 91 classes, focal loss with the same
matching costs and a loss on every decoder layer.

Not matchable (so the peer does less work than dinokit per training step): no denoising queries,
no loss on the encoder's proposals, no look-forward-twice. Random weights, nothing downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable

import torch
from torch import Tensor, nn

INSTALL_HINT = "--peers needs Hugging Face transformers: pip install -e '.[bench]'"

# Every DeformableDetrConfig option set here (also written to the benchmark's JSON).
HF_OPTIONS: dict[str, Any] = {
    "two_stage": True,
    "with_box_refine": True,
    "num_queries": 900,
    "two_stage_num_proposals": 900,  # two-stage selects this many, not num_queries
    "num_feature_levels": 4,
    "d_model": 256,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 8,
    "decoder_attention_heads": 8,
    "encoder_ffn_dim": 2048,  # HF defaults to 1024; DINO and dinokit use 2048
    "decoder_ffn_dim": 2048,
    "encoder_n_points": 4,
    "decoder_n_points": 4,
    "dropout": 0.0,  # as dinokit (HF defaults to 0.1)
    "auxiliary_loss": True,  # a loss on every decoder layer, as dinokit
    "class_cost": 2,
    "bbox_cost": 5,
    "giou_cost": 2,
    "use_timm_backbone": False,
    "use_pretrained_backbone": False,
    "disable_custom_kernels": True,  # the pure PyTorch sampling path on every version
}
BACKBONE_OUT_FEATURES = ["stage2", "stage3", "stage4"]  # strides 8, 16, 32 (+ one extra level)
TRAINED_STAGES = ("stages.1.", "stages.2.", "stages.3.")  # HF ResNet names of stages 2-4


def available() -> bool:
    """Whether transformers can be imported (checked before any case is launched)."""
    try:
        return importlib.util.find_spec("transformers") is not None
    except (ImportError, ValueError):
        return False


def version() -> str | None:
    if not available():
        return None
    import transformers

    return transformers.__version__


def build_model(num_labels: int = 91) -> nn.Module:
    """A randomly initialised Deformable DETR (two-stage, box refinement) on a ResNet-50."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub; fail, never fetch
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection, ResNetConfig

    backbone = ResNetConfig(out_features=BACKBONE_OUT_FEATURES)
    # backbone=None: newer transformers refuse a backbone name next to backbone_config
    config = DeformableDetrConfig(
        backbone_config=backbone, backbone=None, num_labels=num_labels, **HF_OPTIONS
    )
    model = DeformableDetrForObjectDetection(config)
    match_frozen_stages(model)
    return model


def match_frozen_stages(model: nn.Module) -> int:
    """Train stages 2-4 of the backbone, as dinokit and the DINO/Deformable DETR papers do.

    transformers keeps parameters whose name holds "stage.1"/"stage.2"/"stage.3" trainable, but
    its own ResNet names them "stages.1." ...: with that backbone nothing in the ResNet would be
    trained and a training step would skip the whole backbone backward. Returns the number of
    backbone tensors made trainable.
    """
    count = 0
    for name, p in model.model.backbone.named_parameters():
        if any(stage in name for stage in TRAINED_STAGES):
            p.requires_grad_(True)
            count += 1
    if count == 0:
        raise RuntimeError("no HF ResNet stage matched stages.1-3: transformers renamed its backbone modules")
    return count


def config_summary(model: nn.Module) -> dict[str, Any]:
    """What was built, for the JSON: the options, parameter counts and the installed version."""
    params = list(model.parameters())
    backbone = list(model.model.backbone.parameters())
    return {
        "class": type(model).__name__,
        "transformers": version(),
        "options": dict(HF_OPTIONS),
        "backbone": {"model_type": "resnet", "depths": [3, 4, 6, 3], "out_features": BACKBONE_OUT_FEATURES},
        "num_labels": model.config.num_labels,
        "parameters": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "backbone_trainable": sum(p.numel() for p in backbone if p.requires_grad),
    }


def hf_labels(targets: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """dinokit targets (cxcywh boxes normalised, `labels`) in HF's form (`class_labels`)."""
    return [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]


def make_step(
    model: nn.Module, images: Tensor, masks: Tensor, targets: list[dict[str, Tensor]], train: bool,
    no_grad: bool = True,
) -> Callable[[], None]:
    """One inference (eval mode) or one training step (train mode: forward + loss + backward).

    HF's pixel_mask is 1 on valid pixels, dinokit's mask True on padding. no_grad=False runs the
    inference outside torch.no_grad, for FlopCounterMode (whose module tracker no_grad trips).
    """
    pixel_mask = (~masks).long()
    labels = hf_labels(targets)
    model.train(train)

    def infer() -> None:
        with torch.set_grad_enabled(not no_grad):
            model(pixel_values=images, pixel_mask=pixel_mask)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(pixel_values=images, pixel_mask=pixel_mask, labels=labels)
        out.loss.backward()

    return train_step if train else infer
