"""ONNX export: a valid file whose outputs match PyTorch at other batch and image sizes, and
`dinokit predict --backend onnx` giving the PyTorch backend's detections."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from tests.services import extra

onnx = extra("onnx")
extra("onnxruntime")

from dinokit.cli import main  # noqa: E402
from dinokit.config import load_preset  # noqa: E402
from dinokit.checkpoint import make_checkpoint, save_checkpoint  # noqa: E402
from dinokit.infer.export import OUTPUTS, OnnxDetector  # noqa: E402
from dinokit.model.dino import build_model  # noqa: E402
from dinokit.model.postprocess import postprocess  # noqa: E402
from tests.cli_helpers import assert_same_detections, run_cli

CLASSES = ["circle", "square", "triangle"]
TOL = 1e-3



@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny-preset checkpoint with random weights, exported through the CLI."""
    root = tmp_path_factory.mktemp("onnx")
    cfg = load_preset("tiny")
    cfg.model.num_classes = len(CLASSES)
    torch.manual_seed(0)
    model = build_model(cfg.model, load_weights=False).eval()
    for p in model.parameters():  # move every weight off its init so that no branch is trivial
        p.data.add_(0.02 * torch.randn_like(p))
    ckpt = save_checkpoint(make_checkpoint(model.state_dict(), cfg, CLASSES, [1, 2, 3]), root / "tiny.pt")
    with pytest.raises(SystemExit) as info:
        main(["export", str(ckpt), "--format", "onnx", "--out", str(root / "tiny.onnx")])
    assert info.value.code == 0
    return root, model, cfg


def test_exported_file_is_valid_and_carries_metadata(exported):
    root, _, cfg = exported
    onnx.checker.check_model(str(root / "tiny.onnx"))
    proto = onnx.load(str(root / "tiny.onnx"))
    assert [o.name for o in proto.graph.output] == list(OUTPUTS)
    assert "GridSample" in {n.op_type for n in proto.graph.node}
    assert proto.opset_import[0].version >= 17
    detector = OnnxDetector(root / "tiny.onnx")
    assert detector.classes == CLASSES and detector.cfg.model.hidden_dim == cfg.model.hidden_dim


@pytest.mark.parametrize("batch,height,width", [(1, 128, 128), (2, 96, 160), (2, 160, 192)])
def test_onnx_matches_pytorch_at_other_sizes(exported, batch, height, width):
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
    ours = OnnxDetector(root / "tiny.onnx")(images, masks, sizes)
    assert ours["pred_logits"].shape == (batch, cfg.model.num_queries, len(CLASSES))
    assert float((ours["pred_logits"] - ref["pred_logits"]).abs().max()) < TOL
    assert float((ours["pred_boxes"] - ref["pred_boxes"]).abs().max()) < TOL
    dets = postprocess(ref, sizes, cfg.model.num_select)
    assert float((ours["scores"] - torch.stack([d["scores"] for d in dets])).abs().max()) < TOL
    assert float((ours["boxes"] - torch.stack([d["boxes"] for d in dets])).abs().max()) < TOL * 640  # pixels
    assert ours["labels"].dtype == torch.int64


def test_predict_backend_onnx_gives_the_torch_detections(exported, tmp_path):
    """The same images through `dinokit predict` with the .pt and the exported .onnx: the same
    labels, scores and boxes (pixels of the original image) for every detection."""
    root, _, _ = exported
    gen = torch.Generator().manual_seed(1)
    for i, size in enumerate([(100, 140), (90, 60)]):
        pixels = (torch.rand(*size, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
    common = [str(tmp_path / "img0.png"), str(tmp_path / "img1.png"), "--score", "0.0", "--batch-size", "2"]
    assert run_cli(["predict", *common, "--checkpoint", str(root / "tiny.pt"), "--out", str(tmp_path / "t")]) == 0
    assert run_cli(["predict", *common, "--checkpoint", str(root / "tiny.onnx"), "--out", str(tmp_path / "o")]) == 0
    torch_dets = json.loads((tmp_path / "t" / "detections.json").read_text())
    onnx_dets = json.loads((tmp_path / "o" / "detections.json").read_text())
    # boxes: TOL in normalised coordinates is 0.14 px on these images; 0.5 px leaves room for rounding
    assert assert_same_detections(torch_dets, onnx_dets, score_tol=TOL, box_tol=0.5) == 2 * 100  # num_select
    labels = {d["label"] for r in torch_dets for d in r["detections"]}
    assert len(labels) >= 2  # the label comparison is not trivially one class


def test_onnx_detections_carry_the_datasets_category_ids(exported):
    """The checkpoint's classes have COCO ids 1, 2, 3 (not 0..C-1): `to_coco()` from the .onnx
    detector names the same ids as from the .pt one."""
    import dinokit

    root, _, _ = exported
    image = Image.fromarray((torch.rand(80, 120, 3, generator=torch.Generator().manual_seed(2)) * 255)
                            .to(torch.uint8).numpy())
    pt, ox = (dinokit.load(root / name, device="cpu").predict(image, score=0.0)[0] for name in ("tiny.pt", "tiny.onnx"))
    assert ox.category_ids == pt.category_ids == [1, 2, 3]
    ids = [r["category_id"] for r in ox.to_coco(image_id=1)]
    assert ids == [r["category_id"] for r in pt.to_coco(image_id=1)] and set(ids) <= {1, 2, 3} and 3 in ids


def test_export_errors_are_one_line(exported, tmp_path, capsys):
    root, _, _ = exported
    assert run_cli(["export", str(root / "tiny.pt"), "--format", "tflite", "--out", str(tmp_path / "x")]) == 2
    assert "--format must be onnx" in capsys.readouterr().err
    assert run_cli(["predict", str(tmp_path), "--checkpoint", str(root / "tiny.pt"), "--backend", "tf"]) == 2
    assert "--backend must be torch, onnx or openvino" in capsys.readouterr().err
