"""`dinokit export --format hf`: any checkpoint dinokit reads -> a model folder with its card.

Kept apart from interop/hub.py (the folder format, which interop/load.py reads) so the data flows
one way: checkpoint file -> load.py -> model + checkpoint dict -> card.py -> hub.py's writer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dinokit.interop.card import model_card
from dinokit.interop.hub import require_package, write_folder
from dinokit.interop.load import model_and_checkpoint


def export_folder(checkpoint: str | Path, out: str | Path, name: str | None = None) -> Path:
    """Write `out`/config.json, model.safetensors and README.md for `checkpoint` (a dinokit
    checkpoint, an official DINO .pth or another model folder). The weights are those inference
    runs (EMA when training kept one), checked to build the model before anything is written.
    `name`: the model's name in the card (default: the folder's name)."""
    require_package("huggingface_hub")
    require_package("safetensors")
    model, cfg, ckpt = model_and_checkpoint(checkpoint, torch.device("cpu"))
    out = Path(out)
    source = Path(checkpoint)
    card = model_card(ckpt, cfg, name or out.resolve().name, source if source.is_file() else None)
    return write_folder(ckpt, model.state_dict(), out, card)
