"""IDEA-Research/DINO checkpoints as dinokit checkpoints, and detector weights to start training from.

An official file (`{'model': state_dict, 'args': ...}` or a bare state_dict) becomes a dinokit
checkpoint in memory (`official_checkpoint`), so `eval`, `predict` and `export` read it directly
(through `dinokit.interop.load`) and `dinokit convert official` only has to save the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dinokit.config import Config, ConfigError, apply_dict, apply_overrides, load_preset
from dinokit.errors import CheckpointError
from dinokit.checkpoint import make_checkpoint, read_torch_file, save_checkpoint
from dinokit.interop.keys import (
    check_state, fits_official, is_official_state, official_name, official_shapes, official_to_dinokit,
)

# The 91 category-id slots of the official COCO heads (label i = COCO category id i); "N/A" marks
# ids COCO does not use.
COCO_91 = [
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack",
    "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet",
    "N/A", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]

PRESET_BY_LEVELS = {4: "r50-4scale", 5: "r50-5scale"}


def official_state(obj: Any) -> dict[str, Tensor] | None:
    """The official model state_dict inside a loaded file (its `model` entry or the file itself)."""
    for candidate in (obj.get("model") if isinstance(obj, dict) else None, obj):
        if isinstance(candidate, dict) and candidate and all(torch.is_tensor(v) for v in candidate.values()):
            if is_official_state(candidate):
                return candidate
    return None


def official_settings(obj: Any) -> list[str]:
    """`--set` items from the training arguments an official file carries (`args.nheads`), so that
    the one setting its shapes cannot tell need not be given by hand."""
    args = obj.get("args") if isinstance(obj, dict) else None
    nheads = getattr(args, "nheads", None)
    return [f"model.nheads={nheads}"] if isinstance(nheads, int) and not isinstance(nheads, bool) else []


def official_config(state: dict[str, Tensor], overrides: list[str] | None = None) -> Config:
    """The matching preset (by number of feature levels) with every shape read off the weights.

    `overrides` (`section.field=value`) apply first; `model.nheads` is the one field the shapes
    cannot tell (the official models use 8; see `official_settings`).
    """
    levels = state.get("transformer.level_embed", state.get("module.transformer.level_embed"))
    if levels is None:
        raise CheckpointError("official checkpoint is missing transformer.level_embed")
    preset = PRESET_BY_LEVELS.get(int(levels.shape[0]))
    if preset is None:
        raise CheckpointError(f"official checkpoint has {int(levels.shape[0])} feature levels; 4 or 5 can be converted")
    cfg = load_preset(preset)
    cfg.data.eval_resize = "official"  # evaluate and predict as the official code (the published AP)
    cfg = apply_overrides(cfg, overrides or [])
    try:
        apply_dict(cfg, {"model": official_shapes(state, cfg.model.nheads)})
    except ConfigError as exc:
        raise CheckpointError(f"official checkpoint shapes give an invalid configuration: {exc}") from None
    problems = fits_official(cfg.model)
    if problems:
        raise CheckpointError("this configuration cannot hold official weights: " + "; ".join(problems))
    return cfg


def official_checkpoint(state: dict[str, Tensor], overrides: list[str] | None = None) -> dict[str, Any]:
    """A dinokit checkpoint dict (float32 weights, COCO class slots) from an official state_dict.

    Raises CheckpointError naming missing or unexpected keys when the file is partial or not DINO.
    """
    from dinokit.model.dino import build_model

    cfg = official_config(state, overrides)
    converted = {k: v.float() if v.is_floating_point() else v for k, v in official_to_dinokit(state).items()}
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation time
        expected = build_model(cfg.model, load_weights=False).state_dict()
    check_state(converted, expected, "official checkpoint", official_name)
    classes = COCO_91 if cfg.model.num_classes == len(COCO_91) else [str(i) for i in range(cfg.model.num_classes)]
    return make_checkpoint(converted, cfg, classes, list(range(cfg.model.num_classes)), source="IDEA-Research/DINO")


def convert_official(source: str | Path, out: str | Path, overrides: list[str] | None = None) -> tuple[Path, Config]:
    """`dinokit convert official`: read an official file and save it as a dinokit checkpoint
    (never over `source`)."""
    from dinokit.files import reading

    source = Path(source)
    with reading(source, outputs={"--out": out}):
        return _convert(source, out, overrides)


def _convert(source: Path, out: str | Path, overrides: list[str] | None) -> tuple[Path, Config]:
    raw = read_torch_file(source)
    state = official_state(raw)
    if state is None:
        raise CheckpointError(
            f"{source} is not an official DINO checkpoint (no transformer.* and backbone.0.body.* weights)"
        )
    ckpt = official_checkpoint(state, official_settings(raw) + list(overrides or []))
    return save_checkpoint(ckpt, out), Config.from_dict(ckpt["config"])
