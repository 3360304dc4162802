"""ONNX export of the inference path, and an onnxruntime detector with the predictor's interface.

The graph takes what the predictor feeds the PyTorch model:
    images      (B, 3, H, W) float32 in [0, 1] (mean/std normalisation is inside the graph)
    masks       (B, H, W) bool, True on padding (all False for single images)
    orig_sizes  (B, 2) int64 (h, w) of the original images, to scale the boxes
and returns pred_logits (B, K, C), pred_boxes (B, K, 4) cxcywh in [0, 1], and the postprocessed
scores (B, N), labels (B, N) int64, boxes (B, N, 4) xyxy in original pixels (N = num_select).
Batch, height and width are dynamic. Deformable attention is plain `grid_sample` (ONNX
GridSample, opset >= 16), so no custom operator is needed.

The exporter is the TorchScript tracer (`dynamo=False`): it keeps the level sizes symbolic and
exports the small model in seconds. (The torch.export-based exporter of torch 2.14 took ~1 min and
produced a graph that was wrong at other image sizes.) The config and class names travel in the
model's metadata, so `dinokit predict --backend onnx` needs nothing else.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dinokit.config import Config
from dinokit.errors import CheckpointError, DinokitError
from dinokit.files import atomic_path
from dinokit.model.postprocess import select_detections

INPUTS = ("images", "masks", "orig_sizes")
OUTPUTS = ("pred_logits", "pred_boxes", "scores", "labels", "boxes")
DYNAMIC_AXES = {
    "images": {0: "batch", 2: "height", 3: "width"},
    "masks": {0: "batch", 1: "height", 2: "width"},
    "orig_sizes": {0: "batch"},
    **{name: {0: "batch"} for name in OUTPUTS},
}
MIN_OPSET = 16  # GridSample


class InferenceGraph(nn.Module):
    """The eval-mode detector plus postprocessing, as one traceable module."""

    def __init__(self, model: nn.Module, num_select: int) -> None:
        super().__init__()
        self.model = model.eval()
        self.num_select = num_select

    def forward(self, images: Tensor, masks: Tensor, orig_sizes: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images, masks)
        scores, labels, boxes = select_detections(out["pred_logits"], out["pred_boxes"], orig_sizes, self.num_select)
        return out["pred_logits"], out["pred_boxes"], scores, labels, boxes


@dataclass
class ExportResult:
    path: Path
    opset: int
    sample: tuple[int, int]  # (H, W) the graph was traced at
    min_tokens: int  # the input must give at least this many encoder tokens (top-K selection)


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise DinokitError(
            f"ONNX support needs the '{module}' package: pip install 'dinokit[onnx]' (onnx, onnxruntime)"
        ) from None


def _sample_side(model: nn.Module, side: int, num_queries: int) -> int:
    """A square side that gives at least num_queries encoder tokens: tracing at a smaller size
    would record the top-K as 'all tokens' instead of K."""
    while True:
        with torch.no_grad():
            srcs, _ = model.multiscale(torch.zeros(1, 3, side, side), torch.zeros(1, side, side, dtype=torch.bool))
        if sum(s.shape[-2] * s.shape[-1] for s in srcs) >= num_queries or side >= 4096:
            return side
        side *= 2


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = 17, side: int | None = None) -> ExportResult:
    """Export a checkpoint's detector (inference path, no denoising) to an ONNX file and check it."""
    onnx = _require("onnx")
    if opset < MIN_OPSET:
        raise DinokitError(f"--opset must be >= {MIN_OPSET} (GridSample), got {opset}")
    from dinokit.checkpoint import versions
    from dinokit.interop.load import model_and_checkpoint

    model, cfg, ckpt = model_and_checkpoint(checkpoint, torch.device("cpu"))
    classes, cat_ids = list(ckpt["classes"]), [int(c) for c in ckpt["cat_ids"]]
    graph = InferenceGraph(model, cfg.model.num_select)
    side = _sample_side(model, side or min(cfg.data.image_size, 512), cfg.model.num_queries)
    sample = (
        torch.rand(2, 3, side, side), torch.zeros(2, side, side, dtype=torch.bool),
        torch.tensor([[side, side]] * 2, dtype=torch.int64),
    )
    out = Path(out)
    meta = {
        "dinokit.config": json.dumps(cfg.to_dict()),
        "dinokit.classes": json.dumps(classes),
        "dinokit.cat_ids": json.dumps(cat_ids),
        "dinokit.score_threshold": json.dumps(ckpt.get("score_threshold")),
        "dinokit.versions": json.dumps(versions()),
    }
    with atomic_path(out) as tmp:  # traced, tagged and checked in a temp file; `out` changes last
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python values, the exporter's deprecation
            torch.onnx.export(
                graph, sample, str(tmp), dynamo=False, opset_version=opset, input_names=list(INPUTS),
                output_names=list(OUTPUTS), dynamic_axes=DYNAMIC_AXES, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))
    return ExportResult(out, opset, (side, side), cfg.model.num_queries)


class OnnxDetector:
    """An exported model in onnxruntime, with the config and class names from its metadata."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        ort = _require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"ONNX model not found: {path}")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise CheckpointError(f"{path} is not a loadable ONNX model: {str(exc).splitlines()[0][:120]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "dinokit.config" not in meta:
            raise CheckpointError(f"{path} was not exported by dinokit (no dinokit.config metadata)")
        self.cfg = Config.from_dict(json.loads(meta["dinokit.config"]))
        self.classes: list[str] = json.loads(meta["dinokit.classes"])
        # the dataset's category ids (older exports lack them: 0..K-1); the F1-optimal score, if stored
        self.cat_ids: list[int] = json.loads(meta.get("dinokit.cat_ids", "null")) or list(range(len(self.classes)))
        self.score_threshold: float | None = json.loads(meta.get("dinokit.score_threshold", "null"))
        self.path = path

    def __call__(self, images: Tensor, masks: Tensor, orig_sizes: Tensor) -> dict[str, Tensor]:
        """Tensors in (any device; run on the session's), named outputs out as CPU tensors."""
        feed = {
            "images": images.detach().float().cpu().numpy(),
            "masks": masks.detach().bool().cpu().numpy(),
            "orig_sizes": orig_sizes.detach().long().cpu().numpy(),
        }
        try:
            values = self.session.run(list(OUTPUTS), feed)
        except Exception as exc:  # noqa: BLE001
            raise DinokitError(
                f"onnxruntime failed on a {tuple(images.shape[-2:])} input ({str(exc).splitlines()[0][:160]}); "
                f"images must give at least {self.cfg.model.num_queries} encoder tokens"
            ) from None
        return {name: torch.from_numpy(v) for name, v in zip(OUTPUTS, values)}

    def detect(self, images: Tensor, masks: Tensor, orig_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Per image scores, labels and xyxy pixel boxes, as `postprocess` returns them."""
        out = self(images, masks, orig_sizes)
        return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(out["scores"], out["labels"], out["boxes"])]
