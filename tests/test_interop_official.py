"""Official IDEA-Research/DINO checkpoints: key conversion, parity with the official outputs,
clear errors for wrong files, and fine-tuning onto other classes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from dinokit.checkpoint import save_checkpoint
from dinokit.interop.load import load_checkpoint, load_initial_weights, model_from_checkpoint
from dinokit.interop.official import COCO_91, official_checkpoint
from dinokit.errors import CheckpointError
from dinokit.model.dino import build_model
from dinokit.model.postprocess import postprocess
from tests.cli_helpers import run_cli
from tests.services import SHARED, needs, shared_missing

REFERENCE = SHARED / "reference"
SMALL = REFERENCE / "official_small"
KEYS_JSON = REFERENCE / "dino_official_r50_4scale_keys.json"
needs_small = needs("SHARED", shared_missing(SMALL / "weights_fp16.pt"))
needs_keys = needs("SHARED", shared_missing(KEYS_JSON))

SMALL_SETTINGS = ["model.nheads=4"]  # the one setting the small model's shapes cannot tell
TOL = 1e-4



def small_weights() -> dict[str, torch.Tensor]:
    return torch.load(SMALL / "weights_fp16.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("official") / "small.pt"
    save_checkpoint(official_checkpoint(small_weights(), SMALL_SETTINGS), path)
    return path


@pytest.fixture(scope="module")
def parity(small_ckpt):
    """dinokit's outputs and intermediates on the reference image, next to the official ones."""
    model, cfg, classes, _ = model_from_checkpoint(small_ckpt, torch.device("cpu"))
    seen: dict[str, object] = {"srcs": []}
    for proj in model.input_proj:
        proj.register_forward_hook(lambda m, i, o: seen["srcs"].append(o))
    model.encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("memory", o))
    model.queries.register_forward_hook(lambda m, i, o: seen.__setitem__("selected", o))
    image = pil_to_tensor(Image.open(SMALL / "image.png").convert("RGB")).float()[None] / 255  # (1, 3, 480, 640)
    with torch.no_grad():
        out = model(image)
    det = postprocess(out, torch.tensor([[480, 640]]), cfg.model.num_select)[0]
    ref = torch.load(SMALL / "outputs.pt", map_location="cpu", weights_only=True)
    ref_det = torch.load(SMALL / "postprocessed.pt", map_location="cpu", weights_only=True)
    normalised = (image - model.pixel_mean) / model.pixel_std
    return {"out": out, "seen": seen, "det": det, "ref": ref, "ref_det": ref_det, "input": normalised,
            "classes": classes}


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


@needs_small
def test_small_official_intermediates_match(parity):
    ref, seen = parity["ref"]["intermediates"], parity["seen"]
    assert _diff(parity["input"][0], ref["input"]) == 0.0  # same preprocessing, bit for bit
    for ours, theirs in zip(seen["srcs"], ref["srcs"], strict=True):
        assert _diff(ours, theirs) < TOL
    assert _diff(seen["memory"], ref["memory"]) < TOL
    selected = seen["selected"]
    assert torch.equal(selected.indices, ref["enc_topk_indices"])  # same tokens, same order
    assert _diff(selected.enc_outputs["pred_logits"].max(-1).values, ref["enc_topk_scores"]) < TOL


@needs_small
def test_small_official_outputs_match(parity):
    out, ref = parity["out"], parity["ref"]
    assert _diff(out["pred_logits"], ref["pred_logits"]) < TOL
    assert _diff(out["pred_boxes"], ref["pred_boxes"]) < TOL
    assert len(out["aux_outputs"]) == len(ref["aux_outputs"]) == 1
    for ours, theirs in zip(out["aux_outputs"], ref["aux_outputs"]):
        assert _diff(ours["pred_logits"], theirs["pred_logits"]) < TOL
        assert _diff(ours["pred_boxes"], theirs["pred_boxes"]) < TOL
    assert _diff(out["enc_outputs"]["pred_logits"], ref["interm_outputs"]["pred_logits"]) < TOL
    assert _diff(out["enc_outputs"]["pred_boxes"], ref["interm_outputs"]["pred_boxes"]) < TOL


@needs_small
def test_small_official_detections_match(parity):
    """Top-300 detections as sets: near-tied scores may swap ranks, so match by label and box."""
    det, ref = parity["det"], parity["ref_det"]
    assert _diff(det["scores"], ref["scores"]) < TOL  # both sorted descending
    unmatched = []
    for score, label, box in zip(ref["scores"], ref["labels"], ref["boxes"]):
        same = (det["labels"] == label) & ((det["boxes"] - box).abs().amax(-1) < 1e-3)  # pixels
        if not same.any() or (det["scores"][same] - score).abs().min() > TOL:
            unmatched.append((float(score), int(label)))
    assert not unmatched
    assert parity["classes"][int(ref["labels"][0])] == COCO_91[17] == "cat"


@needs_small
def test_cli_convert_and_predict_with_official_weights(tmp_path, capsys):
    official = tmp_path / "official_small.pth"
    torch.save({"model": small_weights()}, official)
    assert run_cli(["convert", "official", str(official), "--out", str(tmp_path / "c.pt"), "--set", "model.nheads=4"]) == 0
    assert "4-scale resnet50, 50 queries, 91 COCO class slots" in capsys.readouterr().out
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["classes"] == COCO_91 and ckpt["cat_ids"] == list(range(91))
    assert ckpt["config"]["model"]["hidden_dim"] == 64 and ckpt["config"]["model"]["weights"] is not None

    # the official file directly; its training args tell the number of heads, as real ones do
    torch.save({"model": small_weights(), "args": argparse.Namespace(nheads=4, num_classes=91)}, official)
    direct = load_checkpoint(official)
    assert direct["config"] == ckpt["config"]
    assert all(torch.equal(direct["model"][k], v) for k, v in ckpt["model"].items())
    image = tmp_path / "small.png"
    Image.open(SMALL / "image.png").convert("RGB").resize((160, 120)).save(image)
    argv = ["predict", str(image), "--weights", str(official), "--score", "0.05", "--json", str(tmp_path / "d.json")]
    assert run_cli(argv) == 0
    labels = {d["label"] for d in json.loads((tmp_path / "d.json").read_text())[0]["detections"]}
    assert labels and labels <= set(COCO_91)


# ------------------------------------------------------------------ the full official layout


def full_official_state() -> dict[str, torch.Tensor]:
    """Random weights in every key and shape of the official R50 4-scale model; shared heads equal."""
    keys = json.loads(KEYS_JSON.read_text())["keys"]
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) * 0.02 for k, shape in keys.items()}
    for k in keys:
        for alias in ("transformer.decoder.class_embed.", "class_embed.",
                      "transformer.decoder.bbox_embed.", "bbox_embed."):
            if k.startswith(alias):
                rest = k[len(alias):].split(".", 1)[1]
                state[k] = state[f"{alias.replace('transformer.decoder.', '')}0.{rest}"]
    return state


@needs_keys
def test_full_official_layout_converts_without_missing_or_unexpected_keys(tmp_path):
    official = tmp_path / "checkpoint0011_4scale.pth"
    torch.save({"model": full_official_state(), "epoch": 11, "args": argparse.Namespace(lr=1e-4)}, official)
    ckpt = load_checkpoint(official)  # converted in memory: eval/predict/export read official files
    assert ckpt["config"]["model"]["num_feature_levels"] == 4 and ckpt["config"]["model"]["num_queries"] == 900
    cfg = ckpt["config"]["model"]
    assert (cfg["hidden_dim"], cfg["nheads"], cfg["enc_points"], cfg["num_classes"]) == (256, 8, 4, 91)
    from dinokit.config import Config

    model = build_model(Config.from_dict(ckpt["config"]).model, load_weights=False)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=True)
    assert not missing and not unexpected
    assert sum(p.numel() for p in model.parameters()) == json.loads(KEYS_JSON.read_text())["parameters_unique"]


@needs_keys
def test_wrong_and_partial_official_files_name_the_problem(tmp_path):
    state = full_official_state()
    partial = dict(state)
    for key in ("transformer.decoder.layers.5.norm3.weight", "input_proj.2.1.bias"):
        del partial[key]
    with pytest.raises(CheckpointError, match="missing 2 key.*input_proj.2.1.bias.*decoder.layers.5.norm3"):
        official_checkpoint(partial)
    extra = {**state, "transformer.mystery.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="does not know: transformer.mystery.weight"):
        official_checkpoint(extra)
    per_layer = {**state, "class_embed.3.bias": torch.ones(91)}
    with pytest.raises(CheckpointError, match="per-layer heads"):
        official_checkpoint(per_layer)
    resized = {**state, "transformer.tgt_embed.weight": torch.zeros(900, 128)}
    with pytest.raises(CheckpointError, match="transformer.tgt_embed.weight"):
        official_checkpoint(resized)
    not_official = tmp_path / "resnet.pth"
    torch.save({k: v for k, v in state.items() if k.startswith("backbone.")}, not_official)
    with pytest.raises(CheckpointError, match="not an official DINO checkpoint"):
        from dinokit.interop.official import convert_official

        convert_official(not_official, tmp_path / "x.pt")


# ------------------------------------------------------------------ fine-tuning


@needs_small
def test_fine_tuning_reinitialises_only_class_dependent_tensors(small_ckpt):
    ckpt = load_checkpoint(small_ckpt)
    from dinokit.config import Config

    cfg = Config.from_dict(ckpt["config"]).model
    cfg.num_classes = 3
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    note = load_initial_weights(model, ckpt, ["raccoon", "cat", "dog"])
    assert "re-initialised for 3 classes (the checkpoint has 91)" in note
    state = model.state_dict()
    for key, value in state.items():
        if key.startswith(("decoder.class_head.", "queries.enc_class_head.", "denoising.label_enc.")):
            assert torch.equal(value, fresh[key]), key
        else:
            assert torch.equal(value, ckpt["model"][key]), key
    same = build_model(Config.from_dict(ckpt["config"]).model, load_weights=False)
    assert "loaded every tensor" in load_initial_weights(same, ckpt, ckpt["classes"])


@needs_small
def test_train_cli_fine_tunes_official_weights_on_other_classes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    official = tmp_path / "official_small.pth"
    torch.save(small_weights(), official)  # a bare state_dict works as well as {'model': ...}
    sets = ["data.shapes_train=4", "data.shapes_val=2", "data.shapes_size=64", "data.image_size=64",
            "data.min_size=64", "model.nheads=4", "model.num_select=20"]
    argv = ["train", "--weights", str(official), "--steps", "1", "--batch-size", "2", "--name", "ft"]
    code = run_cli(argv + [a for s in sets for a in ("--set", s)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "re-initialised for 6 classes (the checkpoint has 91)" in out
    best = load_checkpoint(tmp_path / "runs" / "train" / "ft" / "best.pt")
    assert best["config"]["model"]["hidden_dim"] == 64 and best["config"]["model"]["num_classes"] == 6
    assert best["config"]["model"]["weights"] == str(official)
