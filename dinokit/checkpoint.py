"""The dinokit checkpoint format: atomic writes, safe reads, and the run metadata a checkpoint carries.

A checkpoint is a plain dict loadable with `torch.load(weights_only=True)` (no pickled code):
weights, optimiser/scheduler/EMA state, counters, RNG state, the full `Config` as a dict, the
class names and COCO category ids. Writes go through `dinokit.files` (a temporary file in the same
folder, fsync, rename), so a crash mid-write never destroys the previous file.
Reading *any* checkpoint file (official DINO ones too) into a model is `dinokit.interop.load`.
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dinokit.version import __version__
from dinokit.config import Config, ConfigError, diff_configs
from dinokit.errors import CheckpointError
from dinokit.files import atomic_open

FORMAT = "dinokit-checkpoint"
FORMAT_VERSION = 1

# ModelConfig fields that change parameter shapes or module structure. Other fields (loss
# weights, noise scales, num_select, ...) can differ between training and inference.
ARCHITECTURE_FIELDS = (
    "num_classes", "backbone", "num_feature_levels", "hidden_dim", "nheads", "enc_layers",
    "dec_layers", "dim_feedforward", "enc_points", "dec_points", "num_queries", "queries",
    "denoising", "attention",
)

# A `--weights` / `model.weights` value ending so names a local torch file; anything else is a
# torchvision weights name ("imagenet", "ResNet50_Weights.IMAGENET1K_V2").
TORCH_FILE_SUFFIXES = (".pt", ".pth")


def names_torch_file(weights: str | Path | None) -> bool:
    """Whether a weights value names a local torch file (.pt / .pth) rather than a torchvision
    weights name: the one rule the backbone and the detector-checkpoint loader both follow."""
    return weights is not None and Path(weights).suffix.lower() in TORCH_FILE_SUFFIXES


def versions() -> dict[str, str]:
    import torchvision

    # plain str: torch.__version__ is a TorchVersion, which the weights-only loader refuses
    return {"dinokit": str(__version__), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__)}


def make_checkpoint(
    model_state: dict[str, torch.Tensor],
    cfg: Config,
    classes: list[str],
    cat_ids: list[int],
    metrics: dict[str, Any] | None = None,
    **training: Any,
) -> dict[str, Any]:
    """The dict `save_checkpoint` writes. `training` adds optimizer, scheduler, ema, epoch, step,
    rng, history, ... (a converted or exported checkpoint needs none of them)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_state,
        "config": cfg.to_dict(),
        "classes": list(classes),
        "cat_ids": [int(c) for c in cat_ids],
        "metrics": metrics or {},
        "versions": versions(),
        **training,
    }


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically (dinokit.files: temp file beside it, fsync, rename)."""
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)
    return Path(path)


def require_checkpoint_file(path: str | Path) -> Path:
    """The path, if it names an existing file (checked before slow work that needs it)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir() and (path / "config.json").is_file():
        return path  # a model folder (dinokit/interop/hub.py reads it)
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    return path


def read_torch_file(path: str | Path) -> Any:
    """`torch.load` on the CPU with the safe (weights-only) unpickler. argparse.Namespace (the
    `args` entry of official DINO checkpoints) is the one class allowed beyond the defaults."""
    path = require_checkpoint_file(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals([argparse.Namespace]):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = re.search(r"GLOBAL (\S+)", str(exc))
        raise CheckpointError(
            f"{path} cannot be loaded safely (weights-only)"
            + (f": it pickles {culprit.group(1)}" if culprit else "")
            + "; if you trust the file, save its weights alone with "
            "torch.save(torch.load(path, weights_only=False)['model'], 'weights.pth')"
        ) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError, ... on garbage
        reason = str(exc).splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is corrupt or not a torch checkpoint ({reason})") from None


def checkpoint_config(ckpt: dict[str, Any]) -> Config:
    """The `Config` a checkpoint was trained with."""
    try:
        return Config.from_dict(ckpt["config"])
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint config is not valid for this dinokit version: {exc}") from None


def check_compatible(ckpt: dict[str, Any], cfg: Config, model: nn.Module | None = None) -> None:
    """Raise `CheckpointError` naming the differing model fields when the weights won't fit.

    Without `model` the architecture fields of the two configs are compared; with it, the
    checkpoint's state-dict keys and shapes are checked against the model's as well.
    """
    saved = ckpt.get("config", {}).get("model", {})
    current = cfg.to_dict()["model"]
    arch = {k: saved.get(k) for k in ARCHITECTURE_FIELDS}
    differing = diff_configs(arch, {k: current.get(k) for k in ARCHITECTURE_FIELDS}, "model.")
    if model is not None and not differing:
        mismatch = _state_mismatch(ckpt["model"], model.state_dict())
        if mismatch:
            differing = diff_configs(saved, current, "model.") or mismatch
    if differing:
        raise CheckpointError(
            "checkpoint weights do not fit this configuration (checkpoint vs now): " + "; ".join(differing)
        )


def _state_mismatch(saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> list[str]:
    out = [f"missing {k}" for k in sorted(set(current) - set(saved))[:3]]
    out += [f"unexpected {k}" for k in sorted(set(saved) - set(current))[:3]]
    out += [
        f"{k} shape {tuple(saved[k].shape)} vs {tuple(v.shape)}"
        for k, v in current.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ][:3]
    return out


def inference_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights to run: the EMA copy when training kept one (evaluation used it), else the model."""
    ema = ckpt.get("ema")
    if ema:
        return {k[len("module."):]: v for k, v in ema.items() if k.startswith("module.")}
    return ckpt["model"]


def latest_run_checkpoint(out: str | Path = "runs") -> Path:
    """The most recently written `<out>/train/*/best.pt`."""
    candidates = list(Path(out).glob("train/*/best.pt"))
    if not candidates:
        raise CheckpointError(
            f"no checkpoint given and no training run found in {Path(out) / 'train'} "
            "(train one with `dinokit train` or pass a checkpoint path)"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime)
