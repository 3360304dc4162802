"""The Python API: dinokit.train -> Run -> Detector.predict on every input kind -> Detections and
each conversion; evaluate, export; one-line errors. The CLI runs through the same functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import dinokit
from dinokit.errors import DinokitError
from dinokit.infer.draw import class_color, draw_detections, draw_scale
from tests.services import extra

FAST = [
    "data.shapes_train=8", "data.shapes_val=4", "data.shapes_size=64", "data.image_size=64", "data.min_size=64",
    "model.backbone=mobilenet_v3_small", "model.hidden_dim=32", "model.nheads=2", "model.enc_layers=1",
    "model.dec_layers=2", "model.dim_feedforward=64", "model.num_queries=20", "model.dn_number=10",
    "model.num_select=20",
]
SHAPES = {"circle", "ring", "square", "diamond", "triangle", "arrow"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DINOKIT_CACHE", str(root / "cache"))
        yield dinokit.train(data="shapes", steps=2, batch_size=4, seed=1, out=str(root / "runs"), name="api",
                            overrides=FAST)


@pytest.fixture(scope="module")
def detector(run):
    return run.detector("cpu")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (48, 72, 3), dtype=np.uint8), "RGB")


def test_train_returns_a_run(run):
    assert run.dir.name == "api" and (run.dir / "best.pt").is_file() and not run.interrupted
    assert run.steps == 2 and 0.0 <= run.best["AP"] <= 1.0
    frame = run.metrics
    assert len(frame) >= 1 and {"step", "AP", "AP50"} <= set(frame.columns)


def test_detector_knows_its_classes_and_config(detector):
    assert set(detector.class_names) == SHAPES
    assert detector.config.model.hidden_dim == 32 and detector.config.data.eval_resize == "longest"
    assert "6 classes" in repr(detector)


def test_every_input_kind_gives_the_same_detections(detector, photo, tmp_path):
    path = tmp_path / "photos" / "a.png"
    path.parent.mkdir()
    photo.save(path)
    array = np.asarray(photo)  # (H, W, 3) uint8
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255  # (3, H, W) in [0, 1]
    kinds = {
        "path": str(path), "Path": path, "folder": path.parent, "glob": str(tmp_path / "photos" / "*.png"),
        "PIL": photo, "numpy": array, "tensor": tensor,
    }
    results = {kind: detector.predict(source, score=0.0) for kind, source in kinds.items()}
    reference = results["path"][0]
    assert len(reference) > 0 and reference.image_size == (48, 72) and reference.source == str(path)
    for kind, dets in results.items():
        assert len(dets) == 1, kind
        assert np.allclose(dets[0].xyxy, reference.xyxy, atol=1e-4), kind
        assert np.allclose(dets[0].scores, reference.scores, atol=1e-5), kind
        assert dets[0].names == reference.names, kind
    assert results["numpy"][0].source == "image0"
    mixed = detector.predict([photo, str(path), array], score=0.0, batch_size=2)  # list, batched
    assert [d.source for d in mixed] == ["image0", str(path), "image2"]
    assert all(np.allclose(d.scores, reference.scores, atol=1e-5) for d in mixed)


HAND_SET = [0.9, 0.5, 0.4999, 0.1]  # scores of the hand-set detections, every class of the first four


def hand_set(detector, seen: list | None = None):
    """`detector` with its model replaced by one returning HAND_SET scores for every image (and
    recording each batch's input shape in `seen`)."""
    import dataclasses

    def detect(images, masks, orig_sizes):
        if seen is not None:
            seen.append(tuple(images.shape[-2:]))
        boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 20.0, 20.0], [0.0, 0.0, 10.0, 10.0], [3.0, 1.0, 9.0, 7.0]])
        return [{"scores": torch.tensor(HAND_SET), "labels": torch.arange(4), "boxes": boxes} for _ in images]

    backend = dataclasses.replace(detector._backend, detect=detect)
    return dinokit.api.Detector(backend, detector.device, detector.source)


def test_score_threshold_keeps_exactly_the_detections_at_or_above_it(detector, photo):
    fake = hand_set(detector)
    for score, kept in ((0.5, [0.9, 0.5]), (0.0, HAND_SET), (0.95, [])):
        det = fake.predict(photo, score=score)[0]
        assert det.scores.tolist() == pytest.approx(kept), score
        assert det.names == detector.class_names[:len(kept)]


def test_box_frame(detector, photo):
    low = detector.predict(photo, score=0.0)[0]
    assert (low.xyxy[:, [0, 2]] <= 72).all() and (low.xyxy[:, [1, 3]] <= 48).all() and (low.xyxy >= 0).all()
    assert set(low.names) <= SHAPES and all(low.names[i] == detector.class_names[k] for i, k in enumerate(low.class_ids))


def test_conversions(detector, photo, tmp_path):
    det = detector.predict(photo, score=0.0)[0]
    coco = det.to_coco(image_id=7)
    assert len(coco) == len(det) and coco[0]["image_id"] == 7
    x0, y0, x1, y1 = det.xyxy[0]
    assert np.allclose(coco[0]["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=1e-4)
    assert coco[0]["category_id"] == det.category_ids[det.class_ids[0]]
    frame = det.to_pandas()
    assert list(frame.columns) == ["source", "x0", "y0", "x1", "y1", "score", "class_id", "name"]
    assert len(frame) == len(det) and frame["name"].tolist() == det.names
    assert frame["class_id"].tolist() == det.class_ids.tolist()
    # one vocabulary: class_id is the index, the JSON's label is the class name
    assert [d["label"] for d in det.to_dict()["detections"]] == [detector.class_names[k] for k in det.class_ids]
    with pytest.warns(DeprecationWarning, match="class_ids"):
        assert det.labels is det.class_ids  # the old name still answers, with a warning
    sv = extra("supervision")
    converted = det.to_supervision()
    assert isinstance(converted, sv.Detections) and len(converted) == len(det)
    assert np.allclose(converted.xyxy, det.xyxy) and np.allclose(converted.confidence, det.scores)
    assert converted.data["class_name"].tolist() == det.names and converted.class_id.tolist() == det.class_ids.tolist()
    drawn = det.plot()
    scale = draw_scale(72, 48)
    assert drawn.size == (round(72 * scale), round(48 * scale))
    saved = det.save(tmp_path / "out" / "a.jpg")
    assert Image.open(saved).size == drawn.size


def test_evaluate_and_export(detector, run, tmp_path):
    extra("onnxruntime")
    import json

    from pycocotools.coco import COCO

    from dinokit.data.shapes import shapes_dir
    from dinokit.infer.evaluator import evaluate_detections

    metrics = detector.evaluate(detections=tmp_path / "dets.json")
    assert {"AP", "AP50", "per_class"} <= set(metrics)
    # the written detections are the ones scored: every val image, num_select each, and COCOeval
    # over the file alone gives the returned metrics
    written = json.loads((tmp_path / "dets.json").read_text())
    gt = COCO(str(shapes_dir(detector.config.data) / "annotations" / "instances_val.json"))
    assert len(written) == len(gt.getImgIds()) * detector.config.model.num_select
    assert {d["image_id"] for d in written} == set(gt.getImgIds())
    again = evaluate_detections(gt, written)
    for name in ("AP", "AP50", "AP75"):
        assert again[name] == pytest.approx(metrics[name], nan_ok=True), name
    path = detector.export(tmp_path / "m.onnx")
    onnx = dinokit.load(path, device="cpu")
    assert onnx.class_names == detector.class_names
    exported = onnx.evaluate()  # an exported model evaluates through the same path (infer/graph_module.py)
    for name in ("AP", "AP50", "AP75"):
        assert exported[name] == pytest.approx(metrics[name], abs=1e-3, nan_ok=True), name


def test_image_size_replaces_the_resize(run, photo):
    """The model sees the image resized to longest side 32 (default: the checkpoint's 64)."""
    sizes = {}
    for image_size in (None, 32):
        seen: list = []
        hand_set(run.detector("cpu", image_size=image_size), seen).predict(photo)
        sizes[image_size] = seen
    assert sizes == {None: [(42, 64)], 32: [(21, 32)]}  # the 48 x 72 photo, aspect kept


@pytest.mark.parametrize(("call", "message"), [
    (lambda d: d.predict(np.zeros((4, 4), dtype=np.uint8)), "must be \\(H, W, 3\\) uint8"),
    (lambda d: d.predict(torch.full((3, 4, 4), 2.0)), "values in \\[0, 1\\]"),
    (lambda d: d.predict(3.5), "cannot use a float as an image"),
    (lambda d: d.predict("no/such/file.png"), "image not found"),
    (lambda d: d.predict([]), "no images given"),
    (lambda d: d.predict(np.zeros((8, 8, 3), dtype=np.uint8), score=2), "score must be in"),
    (lambda d: d.predict(np.zeros((8, 8, 3), dtype=np.uint8), batch_size=0), "batch size must be positive"),
    (lambda d: d.predict_video("clip.mp4", "out.mp4", score=-0.1), "score must be in"),
    (lambda d: d.export("m.tflite", format="tflite"), "export format must be onnx"),
])
def test_bad_input_is_a_one_line_error(detector, call, message):
    with pytest.raises(DinokitError, match=message):
        call(detector)


def test_score_and_batch_size_have_one_rule(detector, tmp_path):
    """The CLI's flags and the API go through predictor.check_predict_options: one error class."""
    from dinokit.config import ConfigError
    from dinokit.infer.predictor import check_predict_options

    with pytest.raises(ConfigError, match=r"^score must be in \[0, 1\], got 1.5$"):
        detector.predict(np.zeros((8, 8, 3), dtype=np.uint8), score=1.5)
    with pytest.raises(ConfigError, match=r"^--score must be in \[0, 1\], got 1.5$"):
        check_predict_options(1.5, 1, flags=True)
    with pytest.raises(ConfigError, match="score must be in"):
        detector.predict_video(tmp_path / "clip.mp4", tmp_path / "out.mp4", score=2)
    assert not (tmp_path / "out.mp4").exists()  # refused before the output is opened
    check_predict_options(0.0, 1)
    check_predict_options(1.0, 1)


def test_load_and_train_errors(run, tmp_path):
    with pytest.raises(DinokitError, match="precision must be one of"):
        dinokit.load(run.dir / "best.pt", precision="fp8")
    with pytest.raises(DinokitError, match="checkpoint not found"):
        dinokit.load(tmp_path / "missing.pt")
    with pytest.raises(DinokitError, match="unknown option 'epoch'"):
        dinokit.train(data="shapes", epoch=3)


def test_drawing_is_readable_and_colours_are_stable():
    image = Image.new("RGB", (100, 80), "white")
    boxes = torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 40.0, 140.0, 90.0]])  # the second leaves the image
    drawn = draw_detections(image, boxes, [1, 7], ["ring 0.90", "x 0.50"])
    assert drawn.size == (512, 410)  # upscaled to a longer side of 512
    pixels = np.asarray(drawn)
    ring = tuple(int(class_color(1)[i:i + 2], 16) for i in (1, 3, 5))
    assert tuple(pixels[200, round(10 * 5.12)]) == ring  # left edge of box 0, class 1's colour
    other = tuple(int(class_color(7)[i:i + 2], 16) for i in (1, 3, 5))
    assert tuple(pixels[409, 450]) == other  # box 1 clipped: its bottom edge is on the last row
    assert class_color(1) == class_color(1 + 20) != class_color(2)
    big = draw_detections(Image.new("RGB", (1600, 1200), "white"), boxes * 10, [1, 7], ["a", "b"])
    assert big.size == (1600, 1200)
    assert (np.asarray(big)[300:310, 100] == ring).all(axis=-1).sum() == 10  # thick line: wider than 1 px
    assert (np.asarray(big)[500, 96:110] == ring).all(axis=-1).sum() >= 4
