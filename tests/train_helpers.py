"""What the training-loop tests share: a DINO small enough for a step of about a second on a busy
2-core CPU, and a dataset cache of the test module's own (the shapes data is generated into it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# The micro model (--set overrides on the tiny preset); each test module adds its data and batch.
MICRO_MODEL = [
    "model.backbone=mobilenet_v3_small", "model.hidden_dim=32", "model.nheads=2", "model.enc_layers=1",
    "model.dec_layers=2", "model.dim_feedforward=64", "model.num_queries=20", "model.dn_number=10",
    "model.num_select=20",
]


def isolated_cache(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A module-scoped work folder whose `cache/` is DINOKIT_CACHE while the module's tests run."""
    root = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DINOKIT_CACHE", str(root / "cache"))
        yield root
