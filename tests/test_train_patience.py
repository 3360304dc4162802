"""Early stopping (train.patience): the count by hand, a run that stops, its resume, and two DDP
processes that stop at the same step. lr 1e-12 keeps the weights (so AP) fixed: every evaluation
after the first is "no better"."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from dinokit.config import apply_overrides, load_preset
from dinokit.interop.load import load_checkpoint
from dinokit.training.patience import patience_reason
from dinokit.training.trainer import train
from tests.train_helpers import MICRO_MODEL, isolated_cache

FROZEN = [
    "data.shapes_train=4", "data.shapes_val=2", "data.shapes_size=64", "data.image_size=64", "data.min_size=64",
    *MICRO_MODEL, "train.batch_size=2", "train.time_budget=0", "train.lr=1e-12", "train.lr_backbone=0",
    "train.eval_every_steps=1", "train.patience=2", "train.steps=20", "train.tensorboard=false",
]


def test_patience_counts_evaluations_since_the_best() -> None:
    history = [{"step": s, "AP": ap} for s, ap in ((10, 0.1), (20, 0.3), (30, 0.2), (40, 0.25))]
    best = history[1]
    assert patience_reason(history[:3], best, 2) == ""  # one evaluation since step 20
    reason = patience_reason(history, best, 2)
    assert reason.startswith("patience: no better AP in 2 evaluations") and "at step 20" in reason
    assert patience_reason(history, best, 3) == ""
    assert patience_reason(history, best, 0) == ""  # off


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    yield from isolated_cache(tmp_path_factory, "patience")


def test_training_stops_keeps_best_and_resumes_the_count(workdir) -> None:
    cfg = apply_overrides(load_preset("tiny"), FROZEN + [f"train.out={workdir / 'runs'}", "train.name=p"])
    result = train(cfg, progress=False)
    # best at step 1 (the first evaluation); steps 2 and 3 are not better: stop after step 3
    assert [row["step"] for row in result.history] == [1, 2, 3] and result.steps == 3
    table = pd.read_csv(result.run_dir / "metrics.csv")
    assert table["stopped"].isna().tolist() == [True, True, False]
    assert "no better AP in 2 evaluations" in table["stopped"].iloc[-1]
    best = load_checkpoint(result.run_dir / "best.pt")
    assert best["step"] == 1 and "score_threshold" in best  # NaN here: the frozen model finds nothing
    assert load_checkpoint(result.run_dir / "last.pt")["step"] == 3
    for name in ("results.png", "curves.png", "pr_curve.png", "f1_curve.png", "confusion_matrix.png",
                 "confusion_matrix.csv", "per_class.csv"):
        assert (result.run_dir / name).is_file(), name
    # resumed with more patience, the two evaluations already spent still count: one more is allowed
    cfg.train.patience = 3
    resumed = train(cfg, resume=True, progress=False)
    assert [row["step"] for row in resumed.history] == [1, 2, 3, 4] and resumed.steps == 4


@pytest.mark.slow
def test_ddp_ranks_stop_at_the_same_step(tmp_path) -> None:
    from tests.test_train_distributed import WORKER, torchrun

    env = {**os.environ, "DINOKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    sets = [arg for item in FROZEN + ["model.denoising=none"] for arg in ("--set", item)]
    cmd = torchrun() + ["--standalone", "--nproc-per-node", "2", str(WORKER), str(tmp_path), "train", "--name", "ddp",
                        *sets]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]  # a rank left behind would hang in a collective
    assert "stopping early at step 3" in proc.stdout
    assert load_checkpoint(Path(tmp_path) / "runs" / "train" / "ddp" / "last.pt")["step"] == 3


def test_tune_trials_stop_early(tmp_path, monkeypatch) -> None:
    import yaml

    from tests.cli_helpers import run_cli

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"metric": "AP50", "params": {"train.lr": {"low": 1e-12, "high": 2e-12}}}))
    sets = [x for s in FROZEN if not s.startswith(("train.lr=", "train.steps=")) for x in ("--set", s)]
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    assert run_cli(["tune", "--space", str(space), "--trials", "1", "--steps", "20", "--out", str(tmp_path), *sets]) == 0
    table = pd.read_csv(tmp_path / "tune" / "space" / "train" / "trial-0" / "metrics.csv")
    assert table["step"].tolist() == [1, 2, 3] and "patience" in table["stopped"].iloc[-1]
