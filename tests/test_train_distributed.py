"""Two real CPU processes under torchrun (gloo): one run folder, written by rank 0 only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dinokit.interop.load import load_checkpoint

FAST = [
    "data.shapes_train=8", "data.shapes_val=4", "data.shapes_size=64", "data.image_size=64", "data.min_size=64",
    "model.backbone=mobilenet_v3_small", "model.hidden_dim=32", "model.nheads=2", "model.enc_layers=1",
    "model.dec_layers=2", "model.dim_feedforward=64", "model.num_queries=20", "model.dn_number=10",
    "model.num_select=20",
]


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_two_process_training(tmp_path):
    env = {**os.environ, "DINOKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    sets = [arg for item in FAST for arg in ("--set", item)]
    # 8 images over 2 processes in batches of 2: 2 steps per epoch, so 3 steps cross an epoch
    cmd = torchrun() + ["--standalone", "--nproc-per-node", "2", "-m", "dinokit", "train", "--steps", "3",
                        "--batch-size", "2", "--name", "ddp", *sets]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    assert proc.stdout.count("done: best AP") == 1  # rank 1 prints nothing
    runs = sorted(p.name for p in (tmp_path / "runs" / "train").iterdir())
    assert runs == ["ddp"]  # rank 0 chose the folder and every rank used it
    run = tmp_path / "runs" / "train" / "ddp"
    assert pd.read_csv(run / "metrics.csv")["step"].tolist() == [2, 3]
    last = load_checkpoint(run / "last.pt")
    assert last["step"] == 3 and (last["epoch"], last["epoch_step"]) == (1, 1)
    assert len(last["rng"]) == 2  # one RNG state per process
    assert not any(k.startswith("module.") for k in last["model"])  # saved unwrapped from DDP
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no stray temp files
