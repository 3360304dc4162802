"""dinokit explain: the internals are the model's own (recomputed attention output, the selected
top-K), every number is in the original image's pixels (a rigged model on a synthetic image,
an official checkpoint against predict), every switch works, and bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dinokit
from dinokit.checkpoint import make_checkpoint, save_checkpoint
from dinokit.config import Config
from dinokit.explain.build import write_selection
from dinokit.explain.report import OUTPUT_FILES
from dinokit.model.dino import build_model
from dinokit.model.heads import inverse_sigmoid
from dinokit.model.sampling import sample_levels_grid
from tests.cli_helpers import run_cli
from tests.model_helpers import micro_config
from tests.services import SHARED, needs, shared_missing

CLASSES = ["a", "b", "c", "d", "e"]
W, H = 200, 120  # the synthetic image (wider than tall: the resize to 96 px changes both sides)
OBJECT = (60.0, 20.0, 100.0, 50.0)  # xyxy pixels of the synthetic object


def synthetic_image() -> Image.Image:
    pixels = np.full((H, W, 3), 40, dtype=np.uint8)
    x0, y0, x1, y1 = (int(v) for v in OBJECT)
    pixels[y0:y1, x0:x1] = (230, 200, 40)
    pixels[::7, :, 2] = 120  # some texture, so that tokens differ
    return Image.fromarray(pixels, "RGB")


def checkpoint(root: Path, name: str = "micro", rig=None, **model) -> Path:
    """A micro DINO (random weights, a few made less uniform) saved as a dinokit checkpoint."""
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = micro_config(**model)
    cfg.data.image_size = 96
    net = build_model(cfg.model, load_weights=False)
    with torch.no_grad():
        for layer in net.decoder.layers:  # non-uniform attention weights and offsets
            attn = layer.cross_attn
            if hasattr(attn, "attention_weights"):
                attn.attention_weights.weight.normal_(0, 0.5)
                attn.sampling_offsets.weight.normal_(0, 0.05)
        if rig is not None:
            rig(net)
    return save_checkpoint(make_checkpoint(net.state_dict(), cfg, CLASSES, [1, 2, 3, 4, 5]), root / f"{name}.pt")


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "synthetic.png"
    synthetic_image().save(path)
    return path


@pytest.fixture(scope="module")
def mixed_ckpt(tmp_path_factory) -> Path:
    return checkpoint(tmp_path_factory.mktemp("ck"))


def test_sampling_recomputes_the_decoder_layer_output(mixed_ckpt, image_file):
    """Item 2: the returned sampling points (pixels) and weights, fed to the reference sampler
    with the layer's value projection, give the cross-attention output the layer produced."""
    detector = dinokit.load(mixed_ckpt, "cpu")
    model = detector._backend.model
    layer = 1
    attn = model.decoder.layers[layer].cross_attn
    seen = {}
    handle = attn.register_forward_hook(lambda m, args, out: seen.update(args=args, out=out))
    exp = detector.explain(image_file, top=3, score=0.0)
    handle.remove()
    assert not attn.sampling._forward_hooks and not model.queries._forward_hooks  # explain's hooks are gone
    _, reference, value, _, shapes, mask = seen["args"]
    locations = torch.from_numpy(exp.arrays["locations"][:, layer]) / torch.tensor([W, H])  # (N, M, L, P, 2)
    weights = torch.from_numpy(exp.arrays["weights"][:, layer])  # (N, M, L, P)
    assert torch.allclose(weights.sum((-1, -2)), torch.ones(weights.shape[:2]), atol=1e-5)  # per head
    with torch.no_grad():
        v = attn.value_proj(value).masked_fill(mask[..., None], 0.0).view(1, value.shape[1], attn.heads, -1)
        recomputed = attn.output_proj(sample_levels_grid(v, shapes, locations[None], weights[None]))[0]
    queries = torch.tensor(exp.queries)
    assert torch.allclose(recomputed, seen["out"][0, queries], atol=1e-4)
    # the reference box drawn for the layer is the one the layer was called with
    ref = torch.from_numpy(exp.arrays["references"][:, layer])
    cxcywh = reference[0, queries, 0]
    expected = torch.cat((cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2), -1)
    assert torch.allclose(ref, expected * torch.tensor([W, H, W, H]), atol=1e-3)


def test_proposals_are_the_models_top_k(mixed_ckpt, image_file):
    """Item 2: the drawn proposals are the tokens the model's query selection took, best first,
    their boxes its proposals, and the heat maps' own top-K is that same set."""
    detector = dinokit.load(mixed_ckpt, "cpu")
    model = detector._backend.model
    seen = {}
    handle = model.queries.register_forward_hook(lambda m, args, out: seen.update(selected=out))
    exp = detector.explain(image_file, score=0.0)
    handle.remove()
    selected = seen["selected"]
    a = exp.arrays
    assert np.array_equal(a["proposal_tokens"], selected.indices[0].numpy())
    boxes = selected.enc_outputs["pred_boxes"][0]
    xyxy = torch.cat((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), -1) * torch.tensor([W, H, W, H])
    assert np.allclose(a["proposal_boxes"], xyxy.numpy(), atol=1e-3)
    assert np.allclose(a["anchors"], a["proposal_boxes"], atol=1e-3)  # mixed: the anchors are the proposals
    heat = np.concatenate([m.ravel() for m in a["objectness"]])
    assert sorted(np.argsort(-heat, kind="stable")[: len(a["proposal_tokens"])]) == sorted(a["proposal_tokens"])
    levels = np.searchsorted(np.cumsum([h * w for h, w in exp.shapes]), a["proposal_tokens"], side="right")
    assert np.array_equal(a["proposal_levels"], levels)


def _rig_static(net) -> None:
    """Every learned anchor on OBJECT, no box refinement, every sampling point on the anchor's centre."""
    box = torch.tensor(OBJECT) / torch.tensor([W, H, W, H])
    cxcywh = torch.cat(((box[:2] + box[2:]) / 2, box[2:] - box[:2]))
    net.queries.refpoint_embed.weight.copy_(inverse_sigmoid(cxcywh).expand_as(net.queries.refpoint_embed.weight))
    last = net.decoder.box_head.layers[-1]
    last.weight.zero_()
    last.bias.zero_()
    for layer in net.decoder.layers:
        layer.cross_attn.sampling_offsets.weight.zero_()
        layer.cross_attn.sampling_offsets.bias.zero_()


def test_coordinates_are_original_pixels(tmp_path, image_file):
    """Item 3: a model rigged to put every box on the synthetic object gives that object's pixel
    box at every layer, as references, anchors and detections, and sampling points on its centre,
    although the model saw the image resized."""
    ck = checkpoint(tmp_path, "static", rig=_rig_static, queries="static")
    exp = dinokit.load(ck, "cpu").explain(image_file, top=2, score=0.0)
    assert tuple(exp.settings["input_size"]) == (57, 96) and exp.size == (H, W)  # resized, not padded
    a = exp.arrays
    target = np.array(OBJECT)
    for key in ("boxes", "references"):
        assert np.allclose(a[key], target, atol=0.05), key
    assert np.allclose(a["anchors"], target, atol=0.05)
    assert np.allclose(exp.detections.xyxy, target, atol=0.05) and len(exp.detections) > 0
    centre = np.array([(OBJECT[0] + OBJECT[2]) / 2, (OBJECT[1] + OBJECT[3]) / 2])
    assert np.allclose(a["locations"], centre, atol=0.05)
    assert "objectness" not in a and any("Static queries" in n for n in exp.notes)


def test_detections_and_final_boxes_match_predict(mixed_ckpt, image_file):
    detector = dinokit.load(mixed_ckpt, "cpu")
    exp = detector.explain(image_file, score=0.0)
    det = detector.predict(image_file, score=0.0)[0]
    assert len(det) == 20 and np.allclose(exp.detections.xyxy, det.xyxy, atol=1e-3)
    assert np.allclose(exp.detections.scores, det.scores) and np.array_equal(exp.detections.class_ids, det.class_ids)
    assert exp.arrays["detection_queries"][0] == exp.queries[0]
    final = exp.arrays["boxes"][0, -1].clip(0, [W, H, W, H])  # predict clips to the image
    assert np.allclose(final, det.xyxy[0], atol=1e-2)


SWITCHES = [
    {"queries": "mixed", "denoising": "cdn"},
    {"queries": "pure", "denoising": "dn"},
    {"queries": "static", "denoising": "none"},
    {"queries": "mixed", "denoising": "cdn", "attention": "dense", "neg_target": "closest-gt"},
    {"queries": "static", "denoising": "dn", "attention": "dense", "lft": False},
]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_every_switch_writes_its_figures(tmp_path, image_file, switches):
    """Item 4: each switch gives the figures, JSON and HTML; denoising.png with ground truth when
    the model has denoising queries, drawn from the model's own CDN group."""
    ck = checkpoint(tmp_path, **switches)
    detector = dinokit.load(ck, "cpu")
    truth = [{"box": [70, 30, 130, 90], "label": "b"}, {"box": list(OBJECT), "label": 0}]
    state = torch.random.get_rng_state()
    exp = detector.explain(image_file, boxes=truth, score=0.0)
    assert torch.equal(state, torch.random.get_rng_state()) and not detector._backend.model.training
    written = exp.save(tmp_path / "out")
    expected = {"selection", "sampling", "refinement", "json", "html"} | ({"denoising"} if switches["denoising"] != "none" else set())
    assert set(written) == expected and all(p.is_file() for p in written.values())
    assert {p.name for p in written.values()} <= set(OUTPUT_FILES)  # what `dinokit explain` announces
    for name in expected - {"json", "html"}:
        assert Image.open(written[name]).size[0] > 300
    record = json.loads(written["json"].read_text())
    assert record["settings"]["queries"] == switches["queries"] and record["width"] == W
    page = written["html"].read_text()
    assert "<table>" in page and "explain.json" in page and page.count("<figcaption>") == len(expected) - 2
    a = exp.arrays
    if switches.get("attention") == "dense":
        assert "locations" not in a and np.allclose(a["attention"].sum(-1), 1.0, atol=1e-4)
    if switches["denoising"] == "none":
        assert "dn_truth" not in a and any("without denoising" in n for n in exp.notes)
        return
    assert np.allclose(a["dn_truth"], np.array([t["box"] for t in truth]), atol=1e-3)
    half = np.concatenate([(a["dn_truth"][:, 2:] - a["dn_truth"][:, :2]) / 2] * 2, -1)  # (G, 4) half sides
    moved = np.abs(a["dn_positive_in"] - a["dn_truth"]) / half
    assert (moved <= 0.4 + 1e-4).all()  # positives: each edge moved by less than lambda1 (box_noise 0.4)
    if switches["denoising"] == "cdn":  # negatives: by [lambda1, 2 lambda1) (no clipping for these boxes)
        moved = np.abs(a["dn_negative_in"] - a["dn_truth"]) / half
        assert ((moved >= 0.4 - 1e-4) & (moved <= 0.8 + 1e-4)).all()
    else:
        assert "dn_negative_in" not in a


def test_no_detection_still_draws_the_top_queries(mixed_ckpt, image_file, tmp_path, capsys):
    code = run_cli(["explain", str(image_file), "--checkpoint", str(mixed_ckpt), "--score", "1.0",
                    "--top", "2", "--layer", "2", "--out", str(tmp_path / "o")])
    assert code == 0
    out = capsys.readouterr().out
    assert "No detection scored 1.0 or more" in out and "sampling.png" in out
    record = json.loads((tmp_path / "o" / "explain.json").read_text())
    assert record["detections"] == [] and len(record["queries"]) == 2 and record["layers"] == [2]
    assert "No detection scored" in (tmp_path / "o" / "explain.html").read_text()


def test_ground_truth_from_a_dataset(mixed_ckpt, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    synthetic_image().save(folder / "one.png")
    x0, y0, x1, y1 = OBJECT
    coco = {"images": [{"id": 7, "file_name": "one.png", "width": W, "height": H}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 2, "bbox": [x0, y0, x1 - x0, y1 - y0],
                             "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
    (folder / "data.json").write_text(json.dumps(coco))
    code = run_cli(["explain", "--checkpoint", str(mixed_ckpt), "--data", str(folder / "data.json"),
                    "--image-id", "one.png", "--out", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr()
    record = json.loads((tmp_path / "o" / "explain.json").read_text())
    assert np.allclose(record["arrays"]["dn_truth"], [OBJECT]) and record["arrays"]["dn_truth_labels"] == [1]
    assert (tmp_path / "o" / "denoising.png").is_file()


def test_write_selection_for_the_studio(mixed_ckpt, image_file, tmp_path):
    path = write_selection(mixed_ckpt, image_file, tmp_path / "arm" / "selection.png")
    assert path.is_file() and Image.open(path).size[0] > 300


@pytest.mark.parametrize("args, message", [
    (["missing.png"], "image not found"),
    (["IMG", "--query", "99"], "--query must be in [0, 11]"),
    (["IMG", "--layer", "4"], "--layer must be in [1, 3]"),
    (["IMG", "--layer", "last"], "--layer must be a number"),
    (["IMG", "--top", "0"], "--top must be positive"),
    (["IMG", "--top", "2", "--query", "1"], "give one"),
    (["IMG", "--score", "2"], "--score must be in [0, 1]"),
    (["IMG", "--boxes", "BOXES"], "class 'zebra' is not one of"),
    (["IMG", "--boxes", "nothing.json"], "boxes file not found"),
    (["--data", "somewhere"], "--data and --image-id go together"),
    ([], "give an IMAGE"),
])
def test_bad_input_is_one_line(mixed_ckpt, image_file, tmp_path, capsys, args, message):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"box": [1, 2, 30, 40], "label": "zebra"}]))
    argv = [str(image_file) if a == "IMG" else str(boxes) if a == "BOXES" else a for a in args]
    code = run_cli(["explain", *argv, "--checkpoint", str(mixed_ckpt), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and message in err, err


OFFICIAL = SHARED / "reference" / "official_small"


@needs("SHARED", shared_missing(OFFICIAL / "weights_fp16.pt"))
def test_official_checkpoint_undoes_the_official_resize(tmp_path):
    """Item 3-4 for a converted official checkpoint: explain resizes as the official code
    (shorter side 800) and its detections, in the original 640x480 pixels, are predict's."""
    from dinokit.interop.official import official_checkpoint

    weights = torch.load(OFFICIAL / "weights_fp16.pt", map_location="cpu", weights_only=True)
    ck = save_checkpoint(official_checkpoint(weights, ["model.nheads=4"]), tmp_path / "official.pt")
    detector = dinokit.load(ck, "cpu")
    exp = detector.explain(OFFICIAL / "image.png", score=0.0, top=2)
    det = detector.predict(OFFICIAL / "image.png", score=0.0)[0]
    assert tuple(exp.settings["input_size"]) == (800, 1066) and exp.size == (480, 640)
    assert np.allclose(exp.detections.xyxy[:20], det.xyxy[:20], atol=1e-2)
    assert exp.detections.names[:20] == det.names[:20]
    assert len(exp.arrays["objectness"]) == 4 and exp.arrays["locations"].shape == (2, 2, 4, 4, 2, 2)  # (N, layers, M, L, P, 2)
