"""TensorBoard logs: every loss term and the lr per step, each evaluation's metrics, under the run
folder; --no-tensorboard writes none. Needs the tensorboard package (the test extra has it)."""

from __future__ import annotations

import dinokit
from tests.cli_helpers import run_cli
from tests.services import extra
from tests.test_api import FAST

extra("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def test_training_writes_losses_lr_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    run = dinokit.train(data="shapes", steps=3, batch_size=4, out=str(tmp_path / "runs"), name="tb",
                        overrides=[*FAST, "train.eval_every_steps=2"])
    logs = run.dir / "tensorboard"
    assert logs.is_dir()
    events = EventAccumulator(str(logs))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/AP", "val/AP50", "val/AR100"} <= tags
    assert any(t.startswith("train/loss_") for t in tags)  # the individual loss terms
    assert any(t.startswith("AP_per_class/") for t in tags)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert [e.step for e in events.Scalars("val/AP")] == [2, 3]  # every 2 steps, and at the end


def test_no_tensorboard_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    sets = [arg for item in FAST for arg in ("--set", item)]
    argv = ["train", "--steps", "1", "--batch-size", "4", "--out", str(tmp_path / "runs"), "--name", "off",
            "--no-tensorboard", *sets]
    assert run_cli(argv) == 0
    assert (tmp_path / "runs" / "train" / "off" / "best.pt").is_file()
    assert not (tmp_path / "runs" / "train" / "off" / "tensorboard").exists()
