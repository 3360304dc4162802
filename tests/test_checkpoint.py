"""Checkpoint files: atomic writes, safe loads, clear errors, compatibility checks, RNG state."""

from __future__ import annotations

import os
import pickle
import random
import time

import numpy as np
import pytest
import torch
from torch import nn

from dinokit.config import load_preset
from dinokit import checkpoint as ckpt_mod
from dinokit.checkpoint import (
    check_compatible, inference_state, latest_run_checkpoint, make_checkpoint, save_checkpoint,
)
from dinokit.interop.load import (
    load_checkpoint,
)
from dinokit.training.optim import build_ema
from dinokit.training.rng import capture_rng, restore_rng
from dinokit.errors import CheckpointError


def small_state() -> dict:
    cfg = load_preset("tiny")
    model = nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return make_checkpoint(model.state_dict(), cfg, ["a", "b"], [1, 7], metrics={"AP": 0.5},
                           optimizer=opt.state_dict(), step=3, epoch=1, rng=[capture_rng()])


def test_roundtrip_loads_with_weights_only(tmp_path):
    path = save_checkpoint(small_state(), tmp_path / "sub" / "last.pt")
    loaded = load_checkpoint(path)
    assert loaded["classes"] == ["a", "b"] and loaded["cat_ids"] == [1, 7]
    assert loaded["config"]["model"]["backbone"] == "resnet18"
    assert set(loaded["versions"]) == {"dinokit", "torch", "torchvision"}
    assert loaded["optimizer"]["state"]  # AdamW moments survived
    torch.load(path, weights_only=True)  # plain data only


def test_crash_mid_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(small_state(), path)
    before = path.read_bytes()
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": "dinokit-checkpoint"}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


def test_interrupt_mid_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    save_checkpoint(small_state(), path)

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"\x00" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(small_state(), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["metrics"] == {"AP": 0.5}
    assert len(list(tmp_path.iterdir())) == 1


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello, this is text", b"PK\x03\x04truncated zip"])
def test_corrupt_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or not a torch checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_truncated_real_checkpoint(tmp_path):
    path = save_checkpoint(small_state(), tmp_path / "a.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "dinokit-checkpoint", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)


def test_foreign_torch_file_is_not_a_dinokit_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a dinokit checkpoint"):
        load_checkpoint(path)
    incomplete = tmp_path / "inc.pt"
    torch.save({"format": "dinokit-checkpoint", "model": {}}, incomplete)
    with pytest.raises(CheckpointError, match="missing config, classes, cat_ids"):
        load_checkpoint(incomplete)


def test_incompatible_config_names_fields():
    ckpt = small_state()
    cfg = load_preset("tiny")
    cfg.model.num_select = 10  # inference-only field: fine
    cfg.model.label_noise = 0.2  # training-only field: fine
    check_compatible(ckpt, cfg)
    cfg.model.hidden_dim = 128
    cfg.model.queries = "static"
    with pytest.raises(CheckpointError) as info:
        check_compatible(ckpt, cfg)
    message = str(info.value)
    assert "model.hidden_dim (64 vs 128)" in message and "model.queries (mixed vs static)" in message
    assert "num_select" not in message and "\n" not in message


def test_state_dict_mismatch_is_reported_with_model():
    ckpt = small_state()  # weights of nn.Linear(4, 2)
    cfg = load_preset("tiny")
    check_compatible(ckpt, cfg, nn.Linear(4, 2))
    with pytest.raises(CheckpointError, match="weight shape"):
        check_compatible(ckpt, cfg, nn.Linear(5, 2))


def test_inference_state_prefers_ema():
    model = nn.Linear(3, 3)
    ema = build_ema(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)
    ema.update_parameters(model)
    plain = make_checkpoint(model.state_dict(), load_preset("tiny"), ["a"], [1])
    assert inference_state(plain) is plain["model"]
    with_ema = make_checkpoint(model.state_dict(), load_preset("tiny"), ["a"], [1], ema=ema.state_dict())
    state = inference_state(with_ema)
    assert set(state) == {"weight", "bias"}
    torch.testing.assert_close(state["weight"], ema.module.weight)


def test_latest_run_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no training run found"):
        latest_run_checkpoint(tmp_path)
    for i, name in enumerate(["exp", "exp2", "other"]):
        p = tmp_path / "train" / name / "best.pt"
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
        os.utime(p, (time.time() + [10, 30, 20][i],) * 2)
    assert latest_run_checkpoint(tmp_path) == tmp_path / "train" / "exp2" / "best.pt"


def test_rng_state_survives_safe_save(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    path = save_checkpoint(make_checkpoint({}, load_preset("tiny"), [], [], rng=[capture_rng()]), tmp_path / "r.pt")
    expected = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(load_checkpoint(path)["rng"][0])
    assert (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist()) == expected


def test_versions_match_installed():
    import torchvision

    v = ckpt_mod.versions()
    assert v["torch"] == torch.__version__ and v["torchvision"] == torchvision.__version__


@pytest.mark.parametrize("weights,is_file", [
    ("model.pt", True), ("dir/model.pth", True), ("MODEL.PTH", True), ("imagenet", False),
    ("ResNet18_Weights.IMAGENET1K_V1", False), ("model.onnx", False), (None, False),
])
def test_one_torch_file_rule(weights, is_file):
    assert ckpt_mod.names_torch_file(weights) is is_file


def test_backbone_and_detector_loader_follow_the_one_rule(tmp_path):
    """An upper-case .PT / .PTH is a local file for both readers of --weights (the backbone and
    the whole-detector loader), not a torchvision weights name."""
    from dinokit.config import ModelConfig
    from dinokit.interop.load import detector_checkpoint
    from dinokit.model.backbone import Backbone

    with pytest.raises(CheckpointError, match="backbone weights file not found"):
        Backbone(ModelConfig(backbone="resnet18", weights=str(tmp_path / "missing.PTH")), levels=3)
    path = save_checkpoint(small_state(), tmp_path / "detector.PT")
    found = detector_checkpoint(str(path))
    assert found is not None and found["classes"] == ["a", "b"]
    assert detector_checkpoint("imagenet") is None
