"""torch.compile of the inference model (`eval` / `predict --compile`, opt-in: the first calls
compile for minutes on a CPU). The training step compiles in dinokit/training/compiled.py."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def compile_model(model: nn.Module, **options: Any) -> nn.Module:
    """torch.compile (a new image size recompiles once, then sizes are dynamic); the original
    module keeps the weights, so checkpoints are saved from it unchanged."""
    return torch.compile(model, **options)  # type: ignore[return-value]
