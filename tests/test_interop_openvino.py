"""OpenVINO export: an IR (.xml + fp32 .bin) carrying the classes, ids and score threshold, whose
outputs match eager PyTorch within TOL at other batch and image sizes, and that `dinokit predict
--checkpoint model.xml`, `dinokit.load` and `evaluate` run as they run the .pt.

Needs the [openvino] extra (and onnx, which the export goes through); without it the module skips,
with DINOKIT_REQUIRE_EXTRAS=1 (set by .ci/run) it fails instead (tests/services.py).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from tests.services import extra  # noqa: E402

extra("openvino", "openvino")  # skip with the reason, or fail where DINOKIT_REQUIRE_EXTRAS=1 (CI)
extra("onnx", "onnx")

import dinokit  # noqa: E402
from dinokit.checkpoint import make_checkpoint, save_checkpoint  # noqa: E402
from dinokit.config import load_preset  # noqa: E402
from dinokit.infer.openvino_ir import OpenVinoDetector  # noqa: E402
from dinokit.model.dino import build_model  # noqa: E402
from dinokit.model.postprocess import postprocess  # noqa: E402
from tests.cli_helpers import assert_same_detections, run_cli

CLASSES = ["circle", "ring", "square", "diamond", "triangle", "arrow"]  # the shapes data's, for evaluate
CAT_IDS = [1, 2, 3, 4, 5, 6]
THRESHOLD = 0.03  # these random weights score 0.019-0.045
# fp32 IR vs eager PyTorch, largest absolute difference of logits and normalised boxes: measured
# 3e-6 on the tiny preset (OpenVINO 2026.4, AVX-512 CPU); 1e-4 leaves room for other kernels.
TOL = 1e-4
SMALL = {"num_classes": len(CLASSES), "backbone": "mobilenet_v3_small", "enc_layers": 1, "dec_layers": 2,
         "num_queries": 30, "num_select": 30, "dn_number": 6}
K = SMALL["num_select"]  # detections per image


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A checkpoint of the tiny preset, made smaller still (a quick export and NNCF run), with
    perturbed random weights and a stored threshold, exported through the CLI into a folder (the
    IR is folder/model.xml + folder/model.bin)."""
    root = tmp_path_factory.mktemp("openvino")
    cfg = load_preset("tiny")
    for key, value in SMALL.items():
        setattr(cfg.model, key, value)
    cfg.data.shapes_train, cfg.data.shapes_val = 4, 6
    torch.manual_seed(0)
    model = build_model(cfg.model, load_weights=False).eval()
    for p in model.parameters():  # move every weight off its init so that no branch is trivial
        p.data.add_(0.02 * torch.randn_like(p))
    ckpt = save_checkpoint(make_checkpoint(model.state_dict(), cfg, CLASSES, CAT_IDS, score_threshold=THRESHOLD),
                           root / "tiny.pt")
    assert run_cli(["export", str(ckpt), "--format", "openvino", "--out", str(root / "ir")]) == 0
    return root, model, cfg


def test_ir_files_keep_fp32_weights_and_the_checkpoints_metadata(exported):
    root, model, cfg = exported
    assert sorted(p.name for p in (root / "ir").iterdir()) == ["model.bin", "model.xml"]  # no scratch left
    params = sum(p.numel() for p in model.parameters())
    assert (root / "ir" / "model.bin").stat().st_size > 3.5 * params  # 4 bytes a weight, not fp16's 2
    detector = OpenVinoDetector(root / "ir" / "model.xml")
    assert detector.classes == CLASSES and detector.cat_ids == CAT_IDS
    assert detector.score_threshold == THRESHOLD
    assert detector.cfg.to_dict() == cfg.to_dict()
    loaded = dinokit.load(root / "ir" / "model.xml")
    assert (loaded.score_threshold, loaded.class_names, loaded.precision) == (THRESHOLD, CLASSES, "fp32")
    assert "openvino" in repr(loaded) and loaded.device.type == "cpu"


@pytest.mark.parametrize("batch,height,width", [(1, 128, 128), (2, 96, 160), (2, 160, 192)])
def test_openvino_matches_pytorch_at_other_sizes(exported, batch, height, width):
    root, model, cfg = exported
    gen = torch.Generator().manual_seed(height)
    images = torch.rand(batch, 3, height, width, generator=gen)
    masks = torch.zeros(batch, height, width, dtype=torch.bool)
    if batch > 1:  # a padded second image, as the predictor batches images of different sizes
        masks[1, height * 3 // 4:] = True
        masks[1, :, width * 2 // 3:] = True
        images[1][:, masks[1]] = 0.0
    sizes = torch.tensor([[480, 640]] * batch)
    with torch.no_grad():
        ref = model(images, masks)
    ours = OpenVinoDetector(root / "ir" / "model.xml")(images, masks, sizes)
    assert ours["pred_logits"].shape == (batch, cfg.model.num_queries, len(CLASSES))
    assert float((ours["pred_logits"] - ref["pred_logits"]).abs().max()) < TOL
    assert float((ours["pred_boxes"] - ref["pred_boxes"]).abs().max()) < TOL
    dets = postprocess(ref, sizes, cfg.model.num_select)
    assert float((ours["scores"] - torch.stack([d["scores"] for d in dets])).abs().max()) < TOL
    assert float((ours["boxes"] - torch.stack([d["boxes"] for d in dets])).abs().max()) < TOL * 640  # pixels
    assert torch.equal(ours["labels"], torch.stack([d["labels"] for d in dets]))


def test_predict_checkpoint_xml_gives_the_torch_detections(exported, tmp_path, capsys):
    """`dinokit predict --checkpoint model.xml`: the .pt's labels, scores and boxes, and without
    --score the stored threshold."""
    root, _, _ = exported
    gen = torch.Generator().manual_seed(1)
    for i, size in enumerate([(100, 140), (90, 60)]):
        pixels = (torch.rand(*size, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
    images = [str(tmp_path / "img0.png"), str(tmp_path / "img1.png"), "--batch-size", "2"]
    xml = str(root / "ir" / "model.xml")
    assert run_cli(["predict", *images, "--score", "0", "--checkpoint", str(root / "tiny.pt"), "--out",
                    str(tmp_path / "t")]) == 0
    assert run_cli(["predict", *images, "--score", "0", "--checkpoint", xml, "--out", str(tmp_path / "o")]) == 0
    torch_dets = json.loads((tmp_path / "t" / "detections.json").read_text())
    ov_dets = json.loads((tmp_path / "o" / "detections.json").read_text())
    # boxes: TOL in normalised coordinates is 0.014 px on these images; 0.5 px leaves room for rounding
    assert assert_same_detections(torch_dets, ov_dets, score_tol=TOL, box_tol=0.5) == 2 * K
    assert len({d["label"] for r in torch_dets for d in r["detections"]}) >= 2  # labels not trivially one class
    capsys.readouterr()
    assert run_cli(["predict", *images, "--checkpoint", xml, "--out", str(tmp_path / "s")]) == 0
    assert f">= {THRESHOLD:g} (the checkpoint's F1-optimal threshold)" in capsys.readouterr().out
    assert run_cli(["predict", *images, "--score", str(THRESHOLD), "--checkpoint", str(root / "tiny.pt"), "--out",
                    str(tmp_path / "ts")]) == 0
    kept = json.loads((tmp_path / "s" / "detections.json").read_text())
    torch_kept = json.loads((tmp_path / "ts" / "detections.json").read_text())
    assert 0 < assert_same_detections(torch_kept, kept, score_tol=TOL, box_tol=0.5) < 2 * K


def test_detections_carry_the_datasets_category_ids(exported):
    root, _, _ = exported
    image = Image.fromarray((torch.rand(80, 120, 3, generator=torch.Generator().manual_seed(2)) * 255)
                            .to(torch.uint8).numpy())
    pt, ov = (dinokit.load(path, device="cpu").predict(image, score=0.0)[0]
              for path in (root / "tiny.pt", root / "ir" / "model.xml"))
    assert ov.category_ids == pt.category_ids == CAT_IDS
    assert [r["category_id"] for r in ov.to_coco(image_id=1)] == [r["category_id"] for r in pt.to_coco(image_id=1)]


def test_evaluate_an_ir_gives_the_torch_metrics(exported, tmp_path, monkeypatch):
    """`evaluate` on model.xml scores OpenVINO's outputs through the one evaluation path: the
    .pt's COCO detections (shapes val, 6 images) and so its metrics."""
    root, _, _ = exported
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    torch_m = dinokit.load(root / "tiny.pt", "cpu").evaluate(batch_size=2, detections=tmp_path / "t.json")
    ov_m = dinokit.load(root / "ir" / "model.xml").evaluate(batch_size=2, detections=tmp_path / "o.json")
    for name in ("AP", "AP50", "AR100"):
        assert math.isclose(ov_m[name], torch_m[name], abs_tol=1e-3), (name, ov_m[name], torch_m[name])
    ours, ref = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("o", "t"))
    assert len(ours) == len(ref) == 6 * K
    for d in ref:  # each torch detection has its own OpenVINO twin: image, class, score, box
        twin = next(i for i, o in enumerate(ours) if o is not None and o["image_id"] == d["image_id"]
                    and o["category_id"] == d["category_id"] and abs(o["score"] - d["score"]) < TOL
                    and max(abs(x - y) for x, y in zip(o["bbox"], d["bbox"])) < 0.5)
        ours[twin] = None


def test_bf16_runs_at_openvinos_reduced_precision(exported):
    """--precision bf16 is OpenVINO's bf16 hint: the outputs move (on a CPU with bf16) but stay close."""
    import openvino as ov

    root, _, _ = exported
    images, masks = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3)), torch.zeros(1, 128, 128,
                                                                                                       dtype=torch.bool)
    sizes = torch.tensor([[128, 128]])
    f32 = OpenVinoDetector(root / "ir" / "model.xml")
    bf16 = OpenVinoDetector(root / "ir" / "model.xml", precision="bf16")
    assert f32.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    a, b = f32(images, masks, sizes), bf16(images, masks, sizes)
    assert torch.isfinite(b["pred_logits"]).all() and torch.isfinite(b["boxes"]).all()
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert bf16.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
        assert float((a["pred_logits"] - b["pred_logits"]).abs().max()) > TOL
    assert dinokit.load(root / "ir" / "model.xml", precision="bf16").precision == "bf16"


def test_bad_input_is_one_error_line(exported, tmp_path, capsys):
    import openvino as ov
    import openvino.opset13 as ops
    import numpy as np

    root, _, _ = exported
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(photo)
    lone = tmp_path / "lone.xml"  # an IR's graph without its weights
    lone.write_bytes((root / "ir" / "model.xml").read_bytes())
    x = ops.parameter([1, 3], np.float32, name="x")  # a valid IR that dinokit did not write
    ov.save_model(ov.Model([ops.relu(x)], [x], "plain"), str(tmp_path / "plain.xml"))
    (tmp_path / "text.xml").write_text("not xml at all\n")
    (tmp_path / "text.bin").write_bytes(b"")
    truncated = tmp_path / "cut.xml"  # the weights cut short
    truncated.write_bytes((root / "ir" / "model.xml").read_bytes())
    (tmp_path / "cut.bin").write_bytes((root / "ir" / "model.bin").read_bytes()[:1000])
    cases = [
        (["predict", str(photo), "--checkpoint", str(lone)], "has no weights file lone.bin beside it"),
        (["predict", str(photo), "--checkpoint", str(tmp_path / "plain.xml")], "was not exported by dinokit"),
        (["predict", str(photo), "--checkpoint", str(tmp_path / "text.xml")], "is not an OpenVINO IR (not an XML"),
        (["predict", str(photo), "--checkpoint", str(truncated)], "is not a loadable OpenVINO IR"),
        (["eval", str(lone)], "has no weights file lone.bin beside it"),
        (["predict", str(photo), "--checkpoint", str(root / "ir" / "model.xml"), "--quantize", "int8"],
         "an OpenVINO model takes --precision fp32 or bf16"),
        (["export", str(root / "tiny.pt"), "--format", "openvino", "--out", str(tmp_path / "m.onnx")],
         "is a .xml file or a folder"),
        (["export", str(root / "ir" / "model.xml"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
         "is already an exported (openvino) model"),
        (["predict", str(photo), "--checkpoint", str(root / "tiny.pt"), "--backend", "tf"],
         "--backend must be torch, onnx or openvino"),
        (["explain", str(photo), "--checkpoint", str(root / "ir" / "model.xml"), "--out", str(tmp_path / "e")],
         "explain needs a torch checkpoint (.pt / .pth), not an exported (openvino) model"),
    ]
    for argv, message in cases:
        assert run_cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.startswith("error:") and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "m.onnx").exists()


def test_an_ir_runs_on_the_cpu_only(monkeypatch):
    """OpenVINO's CPU plugin runs the IR: auto means the CPU, an accelerator is a ConfigError
    (the device resolver is replaced so that the refusal is reached on a machine without one)."""
    import dinokit.runtime.device as device
    from dinokit.config import ConfigError
    from dinokit.infer.openvino_ir import openvino_device

    assert openvino_device("auto") == torch.device("cpu") == openvino_device("cpu")
    monkeypatch.setattr(device, "resolve_device", lambda spec: torch.device("cuda", 0))
    with pytest.raises(ConfigError, match="runs on the CPU"):
        openvino_device("cuda")


def test_int8_export_quantises_with_nncf_and_keeps_the_metadata(exported, tmp_path, monkeypatch, capsys):
    """--int8: FakeQuantize nodes and int8 weights (the .bin about a quarter of fp32's), calibrated
    on the checkpoint's own training images, with the classes, ids and threshold kept."""
    extra("nncf", "openvino")
    import openvino as ov

    root, _, _ = exported
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    xml = tmp_path / "q" / "int8.xml"
    assert run_cli(["export", str(root / "tiny.pt"), "--format", "openvino", "--int8", "--calibration", "3",
                    "--out", str(xml)]) == 0
    assert "int8 (NNCF, 3 calibration images)" in capsys.readouterr().out
    ops = [op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops()]
    assert ops.count("FakeQuantize") >= 10
    assert xml.with_suffix(".bin").stat().st_size < 0.4 * (root / "ir" / "model.bin").stat().st_size
    detector = OpenVinoDetector(xml)
    assert (detector.int8, detector.classes, detector.cat_ids, detector.score_threshold) == (3, CLASSES, CAT_IDS,
                                                                                           THRESHOLD)
    assert OpenVinoDetector(root / "ir" / "model.xml").int8 is None
    images, masks = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(4)), torch.zeros(
        1, 128, 128, dtype=torch.bool)
    out = detector(images, masks, torch.tensor([[128, 128]]))
    assert torch.isfinite(out["scores"]).all() and out["boxes"].shape == (1, K, 4)
    for argv, message in [
        (["export", str(root / "tiny.pt"), "--format", "onnx", "--int8", "--out", str(tmp_path / "m.onnx")],
         "int8 quantisation is for the OpenVINO export"),
        (["export", str(root / "tiny.pt"), "--format", "openvino", "--int8", "--calibration", "0", "--out",
          str(tmp_path / "z")], "--calibration must be positive"),
        (["export", str(root / "tiny.pt"), "--format", "openvino", "--int8", "--data", str(tmp_path / "nowhere"),
          "--out", str(tmp_path / "z")], "data path does not exist"),
    ]:
        assert run_cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "z").exists() and not (tmp_path / "m.onnx").exists()


def test_a_failed_export_leaves_the_previous_ir_whole(exported, tmp_path, monkeypatch):
    """The IR is saved in a scratch folder and moved into place last: a save that fails half-way
    leaves the old .xml and .bin as they were, and no scratch folder behind."""
    import shutil

    import openvino as ov

    root, _, _ = exported
    target = tmp_path / "ir"
    shutil.copytree(root / "ir", target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def half_written(model, path, *args, **kwargs):
        with open(path, "w") as handle:  # a torn .xml where the scratch copy goes
            handle.write("<net")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ov, "save_model", half_written)
    with pytest.raises(RuntimeError, match="disk full"):
        dinokit.load(root / "tiny.pt", "cpu").export(target, format="openvino")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir"]
