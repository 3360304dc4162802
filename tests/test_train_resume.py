"""Resume at any step is exact: stopped by SIGTERM or killed after a mid-epoch checkpoint, a run
resumed from last.pt ends with weights bit-identical (CPU) to a run that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dinokit.config import Config, apply_overrides, load_preset
from dinokit.interop.load import load_checkpoint
from dinokit.training import trainer as trainer_mod
from dinokit.training.samples import SeededSamples, sample_seed
from dinokit.training.trainer import train
from tests.train_helpers import MICRO_MODEL, isolated_cache

# 16 images in batches of 2: 8 steps per epoch, so every stop below is inside the first epoch.
FAST = [
    "data.shapes_train=16", "data.shapes_val=2", "data.shapes_size=64", "data.image_size=64", "data.min_size=32",
    *MICRO_MODEL, "train.batch_size=2", "train.time_budget=0", "train.threads=2", "train.lr=1e-3",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    yield from isolated_cache(tmp_path_factory, "resume")


def config(workdir, *extra: str) -> Config:
    return apply_overrides(load_preset("tiny"), FAST + [f"train.out={workdir / 'runs'}", *extra])


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_mid_epoch_then_resume_is_bit_identical(workdir, workers):
    common = ["train.steps=4", "train.eval_every_steps=2", f"data.workers={workers}"]
    straight = train(config(workdir, *common, f"train.name=straight{workers}"), progress=False)

    sent = []

    def terminate(row):  # at the step-2 evaluation, mid-epoch: a real SIGTERM to this process
        if not sent:
            sent.append(row["step"])
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = config(workdir, *common, f"train.name=stopped{workers}")
    first = train(cfg, progress=False, on_epoch=terminate)
    assert first.interrupted and first.steps == 2 and sent == [2]
    stopped = load_checkpoint(first.run_dir / "last.pt")
    assert (stopped["epoch"], stopped["epoch_step"]) == (0, 2)
    second = train(cfg, resume=True, progress=False)
    assert second.steps == 4 and not second.interrupted
    assert_same_weights(load_checkpoint(second.run_dir / "last.pt")["model"],
                        load_checkpoint(straight.run_dir / "last.pt")["model"])
    assert [r["step"] for r in second.history] == [2, 4]
    assert second.history[-1]["loss"] == straight.history[-1]["loss"]


def test_sigkill_after_mid_epoch_checkpoint_then_resume_is_bit_identical(workdir):
    """train.checkpoint_every_steps=2 in a separate process, SIGKILLed once last.pt exists."""
    sets = FAST + ["data.workers=2", "train.checkpoint_every_steps=2", "train.eval_every=5"]
    env = {**os.environ, "DINOKIT_CACHE": str(workdir / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "dinokit", "train", "--steps", "5", "--out", str(workdir / "runs"),
           "--name", "killed"] + [arg for s in sets for arg in ("--set", s)]
    last = workdir / "runs" / "train" / "killed" / "last.pt"
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    saved = load_checkpoint(last)
    assert saved["step"] in (2, 4) and saved["epoch"] == 0 and saved["epoch_step"] == saved["step"]

    extra = ["data.workers=2", "train.checkpoint_every_steps=2", "train.eval_every=5", "train.steps=5"]
    resumed = train(config(workdir, *extra, "train.name=killed"), resume=True, progress=False)
    straight = train(config(workdir, *extra, "train.name=unkilled"), progress=False)
    assert resumed.steps == straight.steps == 5
    assert_same_weights(load_checkpoint(resumed.run_dir / "last.pt")["model"],
                        load_checkpoint(straight.run_dir / "last.pt")["model"])


def test_checkpoint_every_minutes_writes_last_inside_the_epoch(workdir, monkeypatch):
    written = []
    real = trainer_mod.save_checkpoint

    def spy(ckpt, path):
        written.append((path.name, ckpt["step"], ckpt["epoch_step"]))
        real(ckpt, path)

    monkeypatch.setattr(trainer_mod, "save_checkpoint", spy)
    train(config(workdir, "train.steps=3", "train.checkpoint_every=0.000001", "train.name=often"), progress=False)
    assert [w for w in written if w[0] == "last.pt"] == [("last.pt", 1, 1), ("last.pt", 2, 2), ("last.pt", 3, 3)]


def test_augmentation_draws_depend_on_seed_epoch_and_index_only():
    class Draw(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3)

    samples = SeededSamples(Draw(), seed=7)
    before = torch.get_rng_state()
    a = samples[2]
    torch.rand(5)  # other draws in between change nothing
    assert torch.equal(samples[2], a) and not torch.equal(samples[1], a)
    samples.set_epoch(1)
    assert not torch.equal(samples[2], a)
    torch.set_rng_state(before)
    samples.set_epoch(0)
    samples[3]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is untouched
    assert sample_seed(7, 0, 2) != sample_seed(7, 0, 3) != sample_seed(8, 0, 3)


def test_resume_applies_a_changed_lr_and_weight_decay_and_says_so(workdir, capsys):
    """`--resume --set train.lr=...`: the optimiser's saved state must not win over the new value,
    and config.yaml says what ran."""
    import yaml

    first = train(config(workdir, "train.steps=1", "train.name=lr", "train.eval_every_steps=1"), progress=False)
    capsys.readouterr()
    resumed = train(config(workdir, "train.steps=2", "train.name=lr", "train.lr=5e-4", "train.lr_backbone=5e-5",
                           "train.weight_decay=0.05", "train.eval_every_steps=1"), resume=True, progress=False)
    assert "train.lr 0.001 -> 0.0005" in capsys.readouterr().out
    ckpt = load_checkpoint(resumed.run_dir / "last.pt")
    assert sorted(set(ckpt["scheduler"]["base_lrs"])) == [5e-5, 5e-4]
    assert {g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]} == {0.05}
    written = yaml.safe_load((first.run_dir / "config.yaml").read_text())["train"]
    assert (written["lr"], written["weight_decay"]) == (5e-4, 0.05)
