"""The training loop end to end on a very small model: run files, resume, interruption, budgets."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
import yaml

from dinokit.config import Config, ConfigError, apply_overrides, load_preset
from dinokit.errors import CheckpointError
from dinokit.interop.load import load_checkpoint, model_from_checkpoint
from dinokit.training.trainer import TrainResult, train
from tests.train_helpers import MICRO_MODEL, isolated_cache

FAST = [
    "data.shapes_train=8", "data.shapes_val=4", "data.shapes_size=64", "data.image_size=64", "data.min_size=64",
    *MICRO_MODEL, "train.batch_size=4",
    "train.time_budget=0",  # not the preset's 9 minutes: a starved host must not cut a 4-step run short
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    yield from isolated_cache(tmp_path_factory, "train")


def fast_config(workdir, *extra: str) -> Config:
    cfg = load_preset("tiny")
    return apply_overrides(cfg, FAST + [f"train.out={workdir / 'runs'}", *extra])


@pytest.fixture(scope="module")
def trained(workdir) -> TrainResult:
    """4 steps = 2 epochs of 8 images in batches of 4: two evaluations, uninterrupted."""
    return train(fast_config(workdir, "train.steps=4", "train.name=full"), progress=False)


def test_run_writes_all_files(trained):
    run = trained.run_dir
    assert run.name == "full"
    for name in ("config.yaml", "metrics.csv", "curves.png", "best.pt", "last.pt"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["num_classes"] == 6  # set from the data, not the preset's 91
    table = pd.read_csv(run / "metrics.csv")
    assert table["step"].tolist() == [2, 4]
    for column in ("epoch", "loss", "lr", "AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "elapsed"):
        assert column in table.columns, column
    assert table["loss"].notna().all() and (table["loss"] > 0).all()
    assert [row["step"] for row in trained.history] == [2, 4]
    assert trained.params > 0 and not trained.interrupted
    assert trained.best["AP"] == max(row["AP"] for row in trained.history)
    assert "per_class" in trained.best


def test_checkpoints_hold_run_metadata(trained):
    last = load_checkpoint(trained.run_dir / "last.pt")
    assert (last["step"], last["epoch"], last["epoch_step"]) == (4, 2, 0)
    assert last["classes"] == ["circle", "ring", "square", "diamond", "triangle", "arrow"]
    assert len(last["cat_ids"]) == 6 and last["optimizer"]["state"] and last["scheduler"]["base_lrs"]
    assert {"torch", "python", "numpy"} <= set(last["rng"][0])
    best = load_checkpoint(trained.run_dir / "best.pt")
    assert best["metrics"]["AP"] == trained.best["AP"]
    model, cfg, classes, cat_ids = model_from_checkpoint(trained.run_dir / "best.pt", torch.device("cpu"))
    assert cfg.model.backbone == "mobilenet_v3_small" and classes == last["classes"] and not model.training


def test_resume_continues_exactly(workdir, trained):
    """2 steps, stop, resume to 4: the same weights as the uninterrupted 4-step run."""
    first = train(fast_config(workdir, "train.steps=2", "train.name=half"), progress=False)
    assert load_checkpoint(first.run_dir / "last.pt")["step"] == 2
    second = train(fast_config(workdir, "train.steps=4", "train.name=half"), resume=True, progress=False)
    assert second.run_dir == first.run_dir
    assert [row["step"] for row in second.history] == [2, 4]
    resumed = load_checkpoint(second.run_dir / "last.pt")
    straight = load_checkpoint(trained.run_dir / "last.pt")
    assert resumed["step"] == 4
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key  # bit-identical on CPU
    assert resumed["history"][-1]["loss"] == straight["history"][-1]["loss"]


def test_resume_with_other_architecture_names_fields(workdir, trained):
    shutil.copytree(trained.run_dir, workdir / "runs" / "train" / "other")
    cfg = fast_config(workdir, "train.steps=6", "train.name=other", "model.hidden_dim=64", "model.nheads=4")
    with pytest.raises(CheckpointError, match=r"model\.hidden_dim \(32 vs 64\)"):
        train(cfg, resume=True, progress=False)


def test_keyboard_interrupt_saves_last(workdir):
    def interrupt(row):
        raise KeyboardInterrupt

    result = train(fast_config(workdir, "train.steps=50", "train.name=ki"), progress=False, on_epoch=interrupt)
    assert result.interrupted
    last = load_checkpoint(result.run_dir / "last.pt")
    assert last["step"] == 2 and len(last["history"]) == 1


def test_time_budget_stops_then_evaluates_with_ema(workdir):
    cfg = fast_config(workdir, "train.time_budget=0.02", "train.ema=true", "train.name=timed")
    result = train(cfg, progress=False)
    assert 1 <= result.steps < 50 and not result.interrupted
    assert result.history and result.history[-1]["step"] == result.steps  # evaluated after stopping mid-epoch
    best = load_checkpoint(result.run_dir / "best.pt")
    assert best["ema"] and "n_averaged" in best["ema"]


def test_auto_names_do_not_collide(workdir):
    from dinokit.runtime.rundir import new_run_dir

    root = workdir / "names"
    assert [new_run_dir(root, "").name for _ in range(3)] == ["exp", "exp2", "exp3"]
    assert [new_run_dir(root, "abl").name for _ in range(2)] == ["abl", "abl2"]


def test_nothing_to_train():
    cfg = load_preset("tiny")
    apply_overrides(cfg, ["train.epochs=0", "train.time_budget=0"])
    with pytest.raises(ConfigError, match="nothing to train"):
        train(cfg, progress=False)


def test_eval_every_steps_evaluates_at_step_marks_and_counts_training_time(workdir):
    """3 steps per evaluation over 3 epochs of 2 steps: marks 3 and 6 cross epoch boundaries,
    so evaluations follow the step count, not the epochs; train_seconds excludes evaluation."""
    result = train(fast_config(workdir, "train.steps=6", "train.eval_every_steps=3", "train.name=marks"),
                   progress=False)
    assert [row["step"] for row in result.history] == [3, 6]
    first, second = result.history
    assert 0 < first["train_seconds"] < second["train_seconds"]
    assert second["train_seconds"] < second["elapsed"]  # the first evaluation's time is left out
    table = pd.read_csv(result.run_dir / "metrics.csv")
    assert table["train_seconds"].tolist() == [first["train_seconds"], second["train_seconds"]]
