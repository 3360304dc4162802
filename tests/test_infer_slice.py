"""Sliced inference (dinokit.infer.slice, supervision's InferenceSlicer): a small object that the
whole-image prediction loses is found tile by tile, its box lands on the right pixels, and the
copies that overlapping tiles find are merged into one; the torch and onnxruntime backends, the
stored score threshold, `dinokit predict --slice` and `dinokit eval --slice`.

The first tests use a detector whose behaviour is known exactly: it finds bright squares by
thresholding the model's input and reports those at least MIN_SIDE input pixels wide, so, like a
real detector, it loses an object that the whole-image resize shrinks below that. A real (tiny,
barely trained) DINO then runs the same path through the API, ONNX and the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import dinokit
from dinokit.api import Detector
from dinokit.config import Config, ConfigError
from dinokit.infer.predictor import Backend
from tests.cli_helpers import run_cli
from tests.services import extra

def _extra(module: str, extra_name: str) -> Any:
    """The optional package (the [test] extra holds it), or the services rule: skip with the
    reason, fail where DINOKIT_REQUIRE_EXTRAS=1 (CI)."""
    return extra(module, extra_name)


sv = _extra("supervision", "slice")
from dinokit.infer.slice import Slicing  # noqa: E402

MODEL_SIDE = 128  # the toy detector's input: the longest side resized to this
MIN_SIDE = 6  # the toy detector loses objects narrower than this in its input
BACKGROUND = 100  # grey level of the canvas


def toy_detector(score_threshold: float | None = None, seen: list[int] | None = None) -> Detector:
    """A Detector whose model finds bright squares: one box per connected bright region at least
    MIN_SIDE input pixels wide, scored by the region's mean brightness (so 250 -> 0.98, 190 -> 0.75),
    times 0.8 where the region touches the input's border: as for a real detector, an object cut
    by a tile border scores lower than the whole object in the next tile. `seen` collects how many
    boxes each call found, to count what the tiles saw before merging."""

    def detect(images: torch.Tensor, masks: torch.Tensor, sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = []
        for pixels, mask, (height, width) in zip(images, masks, sizes.tolist()):  # (3, H, W), (H, W), orig size
            rows, cols = int((~mask).any(1).sum()), int((~mask).any(0).sum())  # the image without padding
            gray = pixels[:, :rows, :cols].mean(0).numpy()  # (h, w) in [0, 1]
            regions, _ = ndimage.label(gray > 0.6)
            boxes, scores = [], []
            for k, found in enumerate(ndimage.find_objects(regions), start=1):
                ys, xs = found
                if min(ys.stop - ys.start, xs.stop - xs.start) < MIN_SIDE:
                    continue
                sx, sy = width / cols, height / rows  # input pixels -> original pixels
                boxes.append([xs.start * sx, ys.start * sy, xs.stop * sx, ys.stop * sy])
                cut = ys.start == 0 or xs.start == 0 or ys.stop == rows or xs.stop == cols
                scores.append(float(gray[regions == k].mean()) * (0.8 if cut else 1.0))
            if seen is not None:
                seen.append(len(boxes))
            out.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "scores": torch.tensor(scores, dtype=torch.float32),
                        "labels": torch.zeros(len(boxes), dtype=torch.int64)})
        return out

    cfg = Config()
    cfg.data.image_size, cfg.data.eval_resize = MODEL_SIDE, "longest"
    backend = Backend(detect, cfg, ["square"], [1], score_threshold=score_threshold)
    return Detector(backend, torch.device("cpu"), Path("toy"))


def canvas(width: int, height: int, squares: list[tuple[int, int, int, int]]) -> Image.Image:
    """A grey canvas with squares (x0, y0, side, grey level)."""
    pixels = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for x0, y0, side, level in squares:
        pixels[y0:y0 + side, x0:x0 + side] = level
    return Image.fromarray(pixels, "RGB")


def test_a_small_object_missed_whole_is_found_sliced_on_its_pixels():
    detector = toy_detector()
    image = canvas(1024, 768, [(700, 300, 24, 250)])  # 24 px: 3 px once 1024 is resized to 128
    assert len(detector.predict(image, score=0.5)[0]) == 0  # the whole-image prediction misses it
    found = detector.predict(image, score=0.5, slice=128, overlap=0.25)[0]
    assert len(found) == 1 and found.names == ["square"] and found.image_size == (768, 1024)
    np.testing.assert_allclose(found.xyxy[0], [700, 300, 724, 324], atol=0.5)  # the canvas's pixels
    assert found.scores[0] == pytest.approx(250 / 255, abs=0.01)


def test_copies_from_overlapping_tiles_merge_into_one_whole_box():
    # 512 px, tiles of 128 overlapping by 32: tiles start at 0, 96, 192, 288, 384 on each axis.
    squares = [
        (100, 100, 20, 250),  # whole in the tiles at x 0 and 96, y 0 and 96: four copies
        (180, 400, 40, 250),  # whole in the tile at (96, 384); cut by the tiles at x 192 and at y 288
        (300, 300, 10, 250),  # whole in the tiles at 192 and 288 on both axes
    ]
    image = canvas(512, 512, squares)
    for merge, metric in (("fusion", "ios"), ("nms", "ios")):
        seen: list[int] = []
        found = toy_detector(seen=seen).predict(image, score=0.5, slice=Slicing(128, 0.25, merge, metric))[0]
        assert sum(seen) >= 9, (merge, metric)  # the tiles found the squares several times over
        assert len(found) == 3, (merge, metric, found.xyxy)
        boxes = found.xyxy[np.argsort(found.xyxy[:, 0])]
        want = np.array([[x, y, x + s, y + s] for x, y, s, _ in squares], dtype=np.float32)
        np.testing.assert_allclose(boxes, want, atol=0.5, err_msg=f"{merge}/{metric}")
    # Intersection over union alone cannot tell a cut part from another object: the parts that the
    # tiles at y 288 see (40 x 16 px, IoU 0.4 with the whole) stay as a fourth box, kept or fused.
    for merge in ("nms", "fusion"):
        cut = toy_detector().predict(image, score=0.5, slice=Slicing(128, 0.25, merge, "iou"))[0]
        extra = [b for b in cut.xyxy.tolist() if b not in want.tolist()]
        assert len(cut) == 4 and len(extra) == 1, merge
        x0, y0, x1, y1 = extra[0]
        assert 180 <= x0 and x1 <= 220 and (y0, y1) == (400, 416), merge  # inside the cut square, its top


def test_the_stored_score_threshold_applies_to_sliced_prediction():
    image = canvas(1024, 1024, [(200, 200, 20, 250), (600, 600, 20, 190)])  # scores 0.98 and 0.75
    detector = toy_detector(score_threshold=0.9)
    kept = detector.predict(image, slice=128)[0]  # score None: the stored 0.9
    np.testing.assert_allclose(kept.xyxy, [[200, 200, 220, 220]], atol=0.5)
    both = detector.predict(image, score=0.5, slice=128)[0].xyxy.tolist()  # and, at IoU, parts cut by tile borders
    assert [200, 200, 220, 220] in both and [600, 600, 620, 620] in both
    inside = [any(x0 >= s and y0 >= s and x1 <= s + 20 and y1 <= s + 20 for s in (200, 600)) for x0, y0, x1, y1 in both]
    assert all(inside)


def test_an_image_smaller_than_a_tile_is_one_tile():
    image = canvas(100, 80, [(10, 10, 30, 250)])
    detector = toy_detector()
    whole, sliced = detector.predict(image, score=0.5)[0], detector.predict(image, score=0.5, slice=256)[0]
    np.testing.assert_allclose(sliced.xyxy, whole.xyxy, atol=1e-4)
    one_by_one = detector.predict(canvas(300, 200, [(10, 10, 30, 250)]), score=0.5, slice=128, batch_size=1)[0]
    np.testing.assert_allclose(one_by_one.xyxy, [[10, 10, 40, 40]], atol=0.5)  # the slicer's one-tile callback
    nothing = detector.predict(canvas(300, 200, []), score=0.5, slice=128)[0]
    assert len(nothing) == 0 and nothing.xyxy.shape == (0, 4) and nothing.names == []


@pytest.mark.parametrize("tile,overlap,message", [
    (0, 0.2, "slice must be a tile side"), (8, 0.2, "slice must be a tile side"), (128, 1.0, "overlap must be"),
    (128, -0.1, "overlap must be"), (128, float("nan"), "overlap must be"),
])
def test_bad_slicing_is_refused(tile, overlap, message):
    with pytest.raises(ConfigError, match=message):
        toy_detector().predict(canvas(64, 64, []), slice=tile, overlap=overlap)


# --------------------------------------------------------------------------- a real DINO


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A micro DINO checkpoint with perturbed random weights and a stored score threshold, and its
    ONNX export (through the CLI)."""
    from dinokit.checkpoint import make_checkpoint, save_checkpoint
    from dinokit.config import apply_dict, load_preset
    from dinokit.model.dino import build_model

    _extra("onnxruntime", "onnx")
    root = tmp_path_factory.mktemp("slice")
    cfg = apply_dict(load_preset("tiny"), {
        "model": {"backbone": "mobilenet_v3_small", "hidden_dim": 32, "nheads": 2, "enc_layers": 1, "dec_layers": 2,
                  "dim_feedforward": 64, "num_queries": 20, "dn_number": 10, "num_select": 20, "num_classes": 2},
        "data": {"image_size": 64, "min_size": 64},
    })
    torch.manual_seed(0)
    model = build_model(cfg.model, load_weights=False).eval()
    for p in model.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    ckpt = make_checkpoint(model.state_dict(), cfg, ["circle", "square"], [1, 2])
    ckpt["score_threshold"] = 0.03  # about the 20th of the ~300 random-weight scores on the test image
    path = save_checkpoint(ckpt, root / "micro.pt")
    assert run_cli(["export", str(path), "--format", "onnx", "--out", str(root / "micro.onnx")]) == 0
    return root


def test_torch_and_onnx_give_the_same_sliced_detections(tiny):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (150, 230, 3), dtype=np.uint8), "RGB")
    torch_det = dinokit.load(tiny / "micro.pt", "cpu").predict(image, score=0.0, slice=64, overlap=0.2)[0]
    onnx_model = dinokit.load(tiny / "micro.onnx", "cpu")
    onnx_det = onnx_model.predict(image, score=0.0, slice=64, overlap=0.2)[0]
    assert len(torch_det) > 100  # 5 x 3 tiles of 20 queries each, merged
    assert np.all(torch_det.xyxy >= 0) and np.all(torch_det.xyxy[:, 2] <= 230) and np.all(torch_det.xyxy[:, 3] <= 150)
    strong = torch_det.scores > torch_det.scores[min(10, len(torch_det) - 1)]  # away from merge ties
    for box, score in zip(torch_det.xyxy[strong], torch_det.scores[strong]):
        gap = np.abs(onnx_det.xyxy - box).max(1) + 10 * np.abs(onnx_det.scores - score)
        assert gap.min() < 0.05, (box, score)
    stored = onnx_model.predict(image, slice=64)[0]  # score None: the threshold stored in the ONNX file
    assert onnx_model.score_threshold == pytest.approx(0.03) and 0 < len(stored) < 60 and stored.scores.min() >= 0.03


def test_predict_and_eval_slice_on_the_command_line(tiny, tmp_path, capsys):
    from dinokit.data.shapes import write_shapes

    image = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8), "RGB").save(image)
    out = tmp_path / "pred"
    argv = ["predict", str(image), "--checkpoint", str(tiny / "micro.pt"), "--slice", "96", "--overlap", "0.25",
            "--score", "0", "--out", str(out), "--device", "cpu"]
    assert run_cli(argv) == 0
    record = json.loads((out / "detections.json").read_text())[0]
    assert (record["width"], record["height"]) == (300, 200) and len(record["detections"]) > 20
    assert all(0 <= b[0] < b[2] <= 300 and 0 <= b[1] < b[3] <= 200 for b in (d["box"] for d in record["detections"]))
    assert (out / "big.png").is_file()

    data = write_shapes(tmp_path / "shapes", 2, 2, 96, seed=0)
    for extra in ([], ["--slice", "64"]):
        metrics_file = tmp_path / f"m{len(extra)}.json"
        argv = ["eval", str(tiny / "micro.pt"), "--data", str(data), "--device", "cpu", "--json", str(metrics_file),
                "--out", str(tmp_path / f"eval{len(extra)}"), *extra]
        assert run_cli(argv) == 0
        metrics = json.loads(metrics_file.read_text())
        assert 0.0 <= metrics["AP"] <= 1.0 and "APs" in metrics
    assert "sliced into 64 px tiles" in " ".join(capsys.readouterr().out.split())
    assert (tmp_path / "eval2" / "pr_curve.png").is_file()


@pytest.mark.parametrize("flags,message", [
    (["--slice", "4"], "--slice must be a tile side of at least 16"),
    (["--slice", "64", "--overlap", "1.5"], "--overlap must be a fraction"),
])
def test_bad_slice_flags_are_one_line_errors(tiny, tmp_path, capsys, flags, message):
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(image)
    assert run_cli(["predict", str(image), "--checkpoint", str(tiny / "micro.pt"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
