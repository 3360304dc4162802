"""Paired seeds: for one seed, every arm starts from the same weights and sees the same draws.

Differences between arms are measured per seed (arm − baseline of the same seed), so whatever
the two runs share cancels. Three things would otherwise differ between arms of one seed:
- initial weights: an arm that builds an extra module (static queries, one-to-many queries)
  shifts the random stream, so even the parameters both arms have start elsewhere. Fix: build
  the reference model (the base config) under the seed and copy every parameter and buffer the
  arm shares with it by name and shape; only the arm's own parts keep their own initialisation;
- augmentation draws and denoising noise: they share the global stream with the model's own
  draws, which differ between arms. Fix: `train.step_seeded` reseeds the stream from
  (seed, step) after every step, so batch k+1 and step k+1's noise start from the same state;
- data order: the sampler is seeded by `train.seed` alone already.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dinokit.config import Config, ModelConfig, apply_dict


@dataclass
class SharedInit:
    """The trainer's `init_model` hook for one (arm, seed). Plain data, so spawned workers can
    receive it. `base_model`: the study's ModelConfig before the arm's overrides."""

    base_model: dict[str, Any]
    seed: int

    def __call__(self, model: nn.Module, model_cfg: ModelConfig) -> None:
        from dinokit.model.dino import build_model

        ref_cfg = Config()
        apply_dict(ref_cfg, {"model": {**self.base_model, "num_classes": model_cfg.num_classes}})
        if ref_cfg.model == model_cfg:
            return  # the reference arm itself: nothing to copy
        with _forked_streams(self.seed):
            reference = build_model(ref_cfg.model, load_weights=True)
        copy_shared(reference, model)


def copy_shared(source: nn.Module, target: nn.Module) -> list[str]:
    """Copy every parameter and buffer of `source` that `target` has under the same name and
    shape; returns the names copied."""
    src = source.state_dict()
    dst = target.state_dict()
    same = [k for k, v in dst.items() if k in src and src[k].shape == v.shape and src[k].dtype == v.dtype]
    with torch.no_grad():
        for k in same:
            dst[k].copy_(src[k].to(device=dst[k].device))
    return same


class _forked_streams:
    """Seed torch, random and numpy for a block and restore all three afterwards."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self.saved = (torch.get_rng_state(), random.getstate(), np.random.get_state())
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        torch_state, py_state, np_state = self.saved
        torch.set_rng_state(torch_state)
        random.setstate(py_state)
        np.random.set_state(np_state)
