"""Two real CPU processes under torchrun (gloo): one run folder, written by rank 0 only, and the
same weights as one process that sees both processes' samples in one batch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision

from dinokit.config import apply_overrides, load_preset
from dinokit.interop.load import load_checkpoint
from dinokit.training.trainer import train

FAST = [
    "data.shapes_train=8", "data.shapes_val=4", "data.shapes_size=64", "data.image_size=64", "data.min_size=64",
    "model.backbone=mobilenet_v3_small", "model.hidden_dim=32", "model.nheads=2", "model.enc_layers=1",
    "model.dec_layers=2", "model.dim_feedforward=64", "model.num_queries=20", "model.dn_number=10",
    "model.num_select=20", "model.denoising=none",  # denoising groups depend on the batch's largest image
]
WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def max_difference(a: dict, b: dict) -> float:
    """Largest weight difference, leaving out the input projections' conv biases: a GroupNorm
    follows each, so their true gradient is zero and AdamW turns float noise into full lr steps."""
    pre_norm = re.compile(r"input_proj\.\d+\.0\.bias")
    keys = [k for k in a if a[k].is_floating_point() and not pre_norm.fullmatch(k)]
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


@pytest.mark.slow
def test_two_process_training(tmp_path, monkeypatch):
    # a local backbone weights file makes every BatchNorm frozen: trainable BatchNorm normalises
    # by each process's own batch (no SyncBatchNorm on CPU), which 1 process with batch 4 cannot match
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "backbone.pt")
    fast = FAST + [f"model.weights={tmp_path / 'backbone.pt'}"]
    env = {**os.environ, "DINOKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    sets = [arg for item in fast + ["train.checkpoint_every_steps=1"] for arg in ("--set", item)]
    # 8 images over 2 processes in batches of 2: 2 steps per epoch, so 3 steps cross an epoch;
    # every step also checkpoints (collectives at each save must not deadlock)
    cmd = torchrun() + ["--standalone", "--nproc-per-node", "2", str(WORKER), str(tmp_path), "train", "--steps",
                        "3", "--batch-size", "2", "--name", "ddp", *sets]
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

    # the ranks hold identical weights, and they are what last.pt holds
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert all(torch.equal(rank0[k], last["model"][k]) for k in rank0)

    # one process with batch 4 over the same samples (same order, same augmentation) ends with the
    # same weights to float tolerance; one process with batch 2 (no averaging across ranks) does not
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    single = {}
    for batch in (4, 2):
        cfg = apply_overrides(load_preset("tiny"), fast + [
            "train.steps=3", f"train.batch_size={batch}", "train.time_budget=0", "train.threads=1",
            f"train.out={tmp_path / 'runs'}", f"train.name=single{batch}",
        ])
        single[batch] = load_checkpoint(train(cfg, progress=False).run_dir / "last.pt")["model"]
    same = max_difference(rank0, single[4])
    other = max_difference(rank0, single[2])
    assert same < 2e-5, same
    assert other > 100 * max(same, 1e-7), (same, other)


@pytest.mark.slow
def test_two_process_training_of_the_default_model_with_cdn(tmp_path):
    """The default model (contrastive denoising on, its groups sized per process by that process's
    own boxes) under DDP: the step runs, gradients are averaged (both ranks end identical) and the
    denoising queries were there. 2 steps end on an epoch end: the final evaluation is decided
    alike on every rank (it used to be asked by rank 1 alone, which then waited for rank 0)."""
    fast = [item for item in FAST if item != "model.denoising=none"]
    env = {**os.environ, "DINOKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    sets = [arg for item in fast for arg in ("--set", item)]
    cmd = torchrun() + ["--standalone", "--nproc-per-node", "2", str(WORKER), str(tmp_path), "train", "--steps",
                        "2", "--batch-size", "2", "--name", "cdn", *sets]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = load_checkpoint(tmp_path / "runs" / "train" / "cdn" / "last.pt")
    assert last["config"]["model"]["denoising"] == "cdn" and last["step"] == 2
    terms = pd.read_csv(tmp_path / "runs" / "train" / "cdn" / "metrics.csv").columns
    assert any(c.endswith("_dn") for c in terms), list(terms)  # the denoising losses were trained
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0[k], last["model"][k]) for k in rank0)
    # parameters averaged alike; BatchNorm statistics stay per process (no SyncBatchNorm on a CPU)
    params = [k for k in rank0 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(params) > 200 and all(torch.equal(rank0[k], rank1[k]) for k in params)
