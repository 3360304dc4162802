"""Any checkpoint file -> a dinokit checkpoint dict or a ready model.

The one place that knows the formats: a dinokit checkpoint passes through, an official
IDEA-Research/DINO file is converted in memory, a model folder (config.json + model.safetensors,
interop/hub.py) is read into the same dict. Training (`--weights`, `--resume`), evaluation,
prediction and export all read checkpoints through here, so the data flows one way:
file -> `read_torch_file` -> official conversion (if needed) -> checkpoint dict -> model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from dinokit.checkpoint import (
    FORMAT, check_compatible, checkpoint_config, inference_state, names_torch_file, read_torch_file,
)
from dinokit.config import Config
from dinokit.errors import CheckpointError
from dinokit.interop.hub import folder_checkpoint, is_model_folder
from dinokit.interop.keys import CLASS_DEPENDENT, check_state
from dinokit.interop.official import official_checkpoint, official_settings, official_state
from dinokit.model.dino import build_model


def load_checkpoint(path: str | Path, official_overrides: list[str] | None = None) -> dict[str, Any]:
    """Load a dinokit checkpoint on the CPU with the safe (weights-only) unpickler. An official
    IDEA-Research/DINO checkpoint is converted in memory (`official_overrides`: settings its
    shapes cannot tell, e.g. model.nheads=8; see `dinokit.interop.official`). A model folder
    (`dinokit export --format hf`) is read from its safetensors, without pickle."""
    if is_model_folder(path):
        return folder_checkpoint(path)
    return as_checkpoint(read_torch_file(path), path, official_overrides)


def as_checkpoint(ckpt: Any, path: str | Path, official_overrides: list[str] | None = None) -> dict[str, Any]:
    """A loaded file's contents as a dinokit checkpoint dict, or CheckpointError."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        state = official_state(ckpt)
        if state is not None:
            return official_checkpoint(state, official_settings(ckpt) + list(official_overrides or []))
        raise CheckpointError(f"{path} is not a dinokit checkpoint (no '{FORMAT}' marker)")
    missing = [key for key in ("model", "config", "classes", "cat_ids") if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is an incomplete dinokit checkpoint (missing {', '.join(missing)})")
    return ckpt


def model_from_checkpoint(path: str | Path, device: torch.device) -> tuple[nn.Module, Config, list[str], list[int]]:
    """Build the model a checkpoint describes and load its (EMA) weights, in eval mode."""
    model, cfg, ckpt = model_and_checkpoint(path, device)
    return model, cfg, list(ckpt["classes"]), [int(c) for c in ckpt["cat_ids"]]


def model_and_checkpoint(path: str | Path, device: torch.device) -> tuple[nn.Module, Config, dict[str, Any]]:
    """`model_from_checkpoint`, with the checkpoint dict itself (classes, cat_ids, score_threshold, ...)."""
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt)
    model = build_model(cfg.model, load_weights=False)  # the checkpoint provides every weight
    state = inference_state(ckpt)
    check_compatible({"config": ckpt["config"], "model": state}, cfg, model)
    model.load_state_dict(state)
    model.to(device).eval()
    return model, cfg, ckpt


def detector_checkpoint(weights: str | None, official_overrides: list[str] | None = None) -> dict[str, Any] | None:
    """The checkpoint `--weights` names when it is a whole detector (dinokit or official), else
    None (a torchvision weights name, or a file of backbone weights)."""
    if weights is not None and is_model_folder(weights):
        return folder_checkpoint(weights)
    if weights is None or not names_torch_file(weights) or not Path(weights).is_file():
        return None
    raw = read_torch_file(Path(weights))
    if isinstance(raw, dict) and (raw.get("format") == FORMAT or official_state(raw) is not None):
        return as_checkpoint(raw, weights, official_overrides)
    return None


QUERY_ROWS = ("queries.tgt_embed.weight", "queries.refpoint_embed.weight")  # (K G + M, D) with aids


def _fit_query_rows(state: dict[str, Any], expected: dict[str, Any], one_to_one: int) -> list[str]:
    """Fine-tuning with other training-only query aids than the checkpoint had (query groups,
    one-to-many): the learned query rows differ in number but their first K rows are the one-to-one
    group both share. Those come from the checkpoint; the other rows keep the fresh model's
    initialisation (copies of group 0 would train identically: same queries, same shared decoder).
    Changes `state` in place; returns the keys so fitted."""
    fitted = []
    for key in QUERY_ROWS:
        have, want = state.get(key), expected.get(key)
        if have is None or want is None or have.shape == want.shape or have.shape[1:] != want.shape[1:]:
            continue
        if min(have.shape[0], want.shape[0]) < one_to_one:
            continue  # another num_queries: check_state names the mismatch
        rows = want.detach().clone()
        rows[:one_to_one] = have[:one_to_one]
        state[key] = rows
        fitted.append(key)
    return fitted


def load_initial_weights(model: nn.Module, ckpt: dict[str, Any], classes: list[str]) -> str:
    """Load a detector checkpoint into a freshly built model to fine-tune it; returns the line to print.

    Every tensor is kept when the class names are the same. Otherwise the class-dependent ones
    (class heads, denoising label embedding) keep their fresh initialisation: their rows mean other
    classes. Anything else that does not fit is a CheckpointError naming the keys.
    """
    expected = model.state_dict()
    # a model trained with plain BatchNorm fine-tunes with it frozen: its step counters have no place
    state = {k: v for k, v in inference_state(ckpt).items() if not k.endswith("num_batches_tracked") or k in expected}
    same = list(ckpt["classes"]) == list(classes)
    if not same:
        state = {k: v for k, v in state.items() if not k.startswith(CLASS_DEPENDENT)}
        expected = {k: v for k, v in expected.items() if not k.startswith(CLASS_DEPENDENT)}
    elif "denoising.label_enc.weight" not in expected:  # fine-tuning without denoising
        state.pop("denoising.label_enc.weight", None)
    trained_k = ckpt.get("config", {}).get("model", {}).get("num_queries")
    grown = _fit_query_rows(state, expected, model.cfg.num_queries) if trained_k == model.cfg.num_queries else []
    check_state(state, expected, "the --weights detector (leave out --preset to train with its own configuration)")
    model.load_state_dict(state, strict=False)
    aids = (f"; learned queries: the {model.cfg.num_queries} of group 0 from the checkpoint, the "
            "training-only rows (query groups, one-to-many) freshly initialised") if grown else ""
    if same:
        return f"weights: loaded every tensor of the detector checkpoint ({len(classes)} classes match){aids}"
    heads = ", ".join(p.rstrip(".") for p in CLASS_DEPENDENT)
    return (
        f"weights: kept every tensor of the detector checkpoint except the class-dependent ones "
        f"({heads}), re-initialised for {len(classes)} classes (the checkpoint has {len(ckpt['classes'])}){aids}"
    )
