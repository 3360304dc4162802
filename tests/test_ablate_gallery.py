"""The studio's gallery: the busiest validation images through every arm's checkpoint, the ground
truth first, and each arm's query selection (dinokit explain's figure) side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dinokit.ablate.gallery import CELL, HEADER, ROWS, make_gallery
from dinokit.checkpoint import make_checkpoint, save_checkpoint
from dinokit.config import Config
from dinokit.data.shapes import CLASSES
from dinokit.model.dino import build_model
from tests.model_helpers import micro_config


def _arm_checkpoint(folder: Path, queries: str) -> Path:
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = micro_config(queries=queries, num_classes=len(CLASSES))
    cfg.data.image_size, cfg.data.shapes_size, cfg.data.shapes_train, cfg.data.shapes_val = 96, 64, 2, 8
    net = build_model(cfg.model, load_weights=False)
    folder.mkdir(parents=True)
    return save_checkpoint(make_checkpoint(net.state_dict(), cfg, list(CLASSES), list(range(1, len(CLASSES) + 1))),
                           folder / "best.pt")


def test_gallery_and_selection_sheet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    arms = {"full": "mixed", "static": "static"}
    done = pd.DataFrame([{"arm": arm, "seed": 7, "run_dir": str(_arm_checkpoint(tmp_path / arm, q).parent)}
                         for arm, q in arms.items()])
    path = make_gallery(done, list(arms), tmp_path / "report" / "gallery.png")
    assert path is not None and path.is_file()
    sheet = np.asarray(Image.open(path).convert("RGB"))
    assert sheet.shape == (HEADER + CELL * ROWS, CELL * (1 + len(arms)), 3)
    for column in range(1 + len(arms)):  # every cell holds a picture, not a blank square
        cell = sheet[HEADER:HEADER + CELL, column * CELL:(column + 1) * CELL]
        assert (cell < 250).any(axis=-1).mean() > 0.2
    selection = Image.open(tmp_path / "report" / "selection.png")
    panels = [Image.open(p) for p in sorted((tmp_path / "report").glob("*.png"))]
    assert len(panels) == 2  # no temp files left behind
    # one row per arm (a strip of six figures side by side was too wide to read)
    rows = np.asarray(selection.convert("L"), dtype=np.float32)
    top, bottom = rows[: selection.height // 2], rows[selection.height // 2: 2 * (selection.height // 2)]
    assert selection.height > HEADER * 4 and top.shape == bottom.shape
    assert np.abs(top - bottom).mean() > 1.0  # static anchors and mixed proposals draw differently
