"""The official test-time resize: a converted official checkpoint, fed the raw 650x417 JPEG of
../shared/reference/official_small_resize through the CLI and the API, gives the official detections."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import dinokit
from dinokit.data.transforms import eval_transforms, official_size
from tests.cli_helpers import run_cli
from tests.services import SHARED, needs, shared_missing

REFERENCE = SHARED / "reference"
RESIZE = REFERENCE / "official_small_resize"
WEIGHTS = REFERENCE / "official_small" / "weights_fp16.pt"
needs_reference = needs("SHARED", shared_missing(RESIZE / "postprocessed.pt", WEIGHTS))


def test_official_size_rule():
    assert official_size(417, 650) == (800, 1247)  # int(800 * 650 / 417) = int(1247.0024): truncated
    assert official_size(650, 417) == (1247, 800)
    assert official_size(100, 1000) == (133, 1330)  # the longer side would pass 1333: shorter side 133
    assert official_size(800, 1000) == (800, 1000)  # the shorter side is 800 already


@pytest.fixture(autouse=True)
def one_thread():
    """The reference ran with 1 intra-op thread: the encoder's top-50 has score gaps of 9e-6, which
    another summation order (more threads) can swap, giving other queries."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def official_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("official") / "small.pth"
    weights = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    torch.save({"model": weights, "args": argparse.Namespace(nheads=4, num_classes=91)}, path)  # as real files
    return path


def _reference() -> dict[str, torch.Tensor]:
    ref = torch.load(RESIZE / "postprocessed.pt", map_location="cpu", weights_only=True)
    boxes = ref["boxes"].clone()  # (300, 4) xyxy original pixels, not clipped; dinokit clips
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 650)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 417)
    return {"scores": ref["scores"], "labels": ref["labels"], "boxes": boxes}


def _unmatched(scores, labels, boxes, tol_score: float, tol_box: float, names: list[str] | None = None) -> int:
    """Reference detections with no dinokit detection of the same label, box and score. With
    `names`, labels are compared by class name (the 91 COCO slots repeat the name 'N/A')."""
    ref = _reference()
    ref_labels = ref["labels"] if names is None else torch.tensor([names.index(names[int(k)]) for k in ref["labels"]])
    missing = 0
    for score, label, box in zip(ref["scores"], ref_labels, ref["boxes"]):
        same = (labels == label) & ((boxes - box).abs().amax(-1) <= tol_box) & ((scores - score).abs() <= tol_score)
        missing += int(not same.any())
    return missing


@needs_reference
def test_api_resizes_and_detects_as_the_official_code(official_file):
    detector = dinokit.load(official_file, device="cpu")
    assert detector.config.data.eval_resize == "official"
    image = Image.open(RESIZE / "image.jpg").convert("RGB")
    resized = eval_transforms(detector.config.data).transforms[0](image)  # the resize step alone
    meta = json.loads((RESIZE / "meta.json").read_text())
    assert [resized.height, resized.width] == meta["resized_hw"] == [800, 1247]
    assert hashlib.sha256(resized.tobytes()).hexdigest() == meta["resized_rgb_sha256"]  # the same pixels
    det = detector.predict(str(RESIZE / "image.jpg"), score=0.0)[0]
    assert len(det) == 300 and det.image_size == (417, 650)
    assert _unmatched(torch.from_numpy(det.scores), torch.from_numpy(det.class_ids), torch.from_numpy(det.xyxy),
                      1e-4, 0.65) == 0


@needs_reference
def test_cli_predict_and_the_image_size_override(official_file, tmp_path):
    out = tmp_path / "d.json"
    argv = ["predict", str(RESIZE / "image.jpg"), "--weights", str(official_file), "--score", "0",
            "--device", "cpu", "--out", str(tmp_path / "p"), "--json", str(out)]
    assert run_cli(argv) == 0
    record = json.loads(out.read_text())[0]
    assert (record["width"], record["height"]) == (650, 417)
    dets = record["detections"]
    names = dinokit.load(official_file, device="cpu").class_names
    labels = torch.tensor([names.index(d["label"]) for d in dets])
    scores = torch.tensor([d["score"] for d in dets])
    boxes = torch.tensor([d["box"] for d in dets])
    assert len(dets) == 300 and _unmatched(scores, labels, boxes, 1e-4 + 5e-5, 0.65 + 0.005, names) == 0  # JSON rounding
    # --image-size replaces the official resize (longest side 512): other pixels, other detections
    assert run_cli([*argv[:-2], "--json", str(tmp_path / "e.json"), "--image-size", "512"]) == 0
    other = json.loads((tmp_path / "e.json").read_text())[0]["detections"]
    assert [d["box"] for d in other] != [d["box"] for d in dets]
