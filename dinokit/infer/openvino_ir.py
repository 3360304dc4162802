"""OpenVINO IR export of the ONNX inference graph, and an OpenVINO detector with the predictor's interface.

The IR is converted from the ONNX export (`dinokit.infer.export`), so both runtimes run the one
traced graph: the same inputs (images (B, 3, H, W) float32 in [0, 1], masks (B, H, W) bool,
orig_sizes (B, 2) int64) and outputs (pred_logits, pred_boxes, scores, labels, boxes), with dynamic
batch and image size. Converting the ONNX file rather than the PyTorch module keeps one tracer
(the TorchScript one, whose symbolic level sizes are tested) behind every exported model.

An IR is two files: `model.xml` (the graph) and `model.bin` (the weights, kept in fp32: OpenVINO's
`save_model` would halve them to fp16 by default). The config, class names, category ids and the
F1-optimal score threshold travel in the IR's runtime info under `dinokit/<key>`, with the same
JSON values the ONNX export keeps in its metadata, so `dinokit.load("model.xml")` needs nothing else.

OpenVINO's CPU plugin runs bf16 by itself on CPUs with native bf16 (avx512_bf16, AMX); the
detector asks for f32 explicitly unless bf16 is requested, so an IR matches eager PyTorch by default.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dinokit.config import Config, ConfigError
from dinokit.errors import CheckpointError, DinokitError
from dinokit.files import atomic_path
from dinokit.infer.export import OUTPUTS, export_onnx

META_PREFIX = "dinokit."  # the ONNX metadata keys: dinokit.config, dinokit.classes, ...
RT_SECTION = "dinokit"  # the IR's runtime info: dinokit/config, dinokit/classes, ...
HINTS = {"fp32": "f32", "bf16": "bf16"}  # resolved precision -> INFERENCE_PRECISION_HINT


def _require(module: str = "openvino") -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise DinokitError(
            f"OpenVINO support needs the '{module}' package: pip install 'dinokit[openvino]' (openvino, nncf, onnx)"
        ) from None


def ir_path(out: str | Path) -> Path:
    """The .xml an export writes: `out` itself when it ends in .xml, else `out/model.xml` (a folder)."""
    out = Path(out)
    if out.suffix.lower() == ".xml":
        return out
    if out.suffix and not out.is_dir():
        raise ConfigError(f"--out for an OpenVINO export is a .xml file or a folder, got '{out}'")
    return out / "model.xml"


def openvino_device(spec: str | None) -> torch.device:
    """The device an IR runs on: OpenVINO's CPU plugin. `auto` is the CPU; an accelerator is refused."""
    from dinokit.runtime.device import resolve_device

    if (spec or "auto").strip().lower() == "auto":
        return torch.device("cpu")
    device = resolve_device(spec)
    if device.type != "cpu":
        raise ConfigError(f"an OpenVINO model runs on the CPU (OpenVINO's CPU plugin), not on '{spec}'; "
                          "use --device cpu or auto")
    return device


@dataclass
class OpenVinoExport:
    xml: Path
    bin: Path
    opset: int  # of the ONNX graph it was converted from
    int8: int  # calibration images of the int8 quantisation (0: fp32)


def export_openvino(
    checkpoint: str | Path, out: str | Path, opset: int = 17, int8: int = 0, data: str | None = None
) -> OpenVinoExport:
    """Export a checkpoint's detector to an OpenVINO IR (fp32 weights) through its ONNX graph;
    `int8` > 0 quantises it to int8 with NNCF, calibrated on that many training images of its
    data (or of `data`; see dinokit.infer.openvino_int8).

    The ONNX file and the IR are made in a scratch folder beside the output; the .bin and then
    the .xml replace their destinations atomically, so a failed export leaves the old IR whole."""
    ov, onnx = _require(), _require("onnx")  # the IR is converted from the ONNX export
    xml = ir_path(out)
    feeds = None
    if int8:  # the calibration data is read first: a bad --data fails before the slow export
        from dinokit.checkpoint import checkpoint_config
        from dinokit.infer.openvino_int8 import calibration_feeds
        from dinokit.interop.load import load_checkpoint

        feeds = calibration_feeds(checkpoint_config(load_checkpoint(checkpoint)), int8, data)
    weights = xml.with_suffix(".bin")
    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{xml.stem}.export-", dir=xml.parent) as scratch:
        onnx_file = export_onnx(checkpoint, Path(scratch) / "model.onnx", opset).path
        meta = {p.key[len(META_PREFIX):]: p.value for p in onnx.load(str(onnx_file), load_external_data=False)
                .metadata_props if p.key.startswith(META_PREFIX)}
        model = ov.convert_model(str(onnx_file))
        if feeds is not None:
            from dinokit.infer.openvino_int8 import quantize_int8

            model = quantize_int8(model, feeds)
        meta["int8"] = json.dumps(int8 or None)
        for key, value in meta.items():  # JSON strings, as in the ONNX metadata
            model.set_rt_info(value, [RT_SECTION, key])
        ov.save_model(model, str(Path(scratch) / "model.xml"), compress_to_fp16=False)
        with atomic_path(xml) as tmp_xml, atomic_path(weights) as tmp_bin:  # the .bin lands first
            os.replace(Path(scratch) / "model.bin", tmp_bin)
            os.replace(Path(scratch) / "model.xml", tmp_xml)
    return OpenVinoExport(xml, weights, opset, int8)


def _rt_json(model: Any, key: str, default: Any = None) -> Any:
    """A runtime-info value written by `export_openvino`, decoded from JSON."""
    if not model.has_rt_info([RT_SECTION, key]):
        return default
    return json.loads(model.get_rt_info([RT_SECTION, key]).astype(str))


class OpenVinoDetector:
    """An exported IR in OpenVINO's CPU plugin, with the config and class names from its runtime info.

    `precision` (fp32 or bf16) is OpenVINO's INFERENCE_PRECISION_HINT; `threads` its
    INFERENCE_NUM_THREADS (None: OpenVINO's choice)."""

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int | None = None) -> None:
        ov = _require()
        path = Path(path)
        if precision not in HINTS:
            raise ConfigError(f"an OpenVINO model runs in {' or '.join(HINTS)}, not '{precision}'")
        if not path.is_file():
            raise CheckpointError(f"OpenVINO model not found: {path}")
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise CheckpointError(f"{path} has no weights file {weights.name} beside it "
                                  "(an OpenVINO IR is a .xml and a .bin of the same name)")
        _check_ir_root(path)
        core = ov.Core()
        try:
            model = core.read_model(str(path), str(weights))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise CheckpointError(f"{path} (with {weights.name}) is not a loadable OpenVINO IR: {_first_line(exc)}") from None
        if not model.has_rt_info([RT_SECTION, "config"]):
            raise CheckpointError(f"{path} was not exported by dinokit (no dinokit/config runtime info)")
        self.cfg = Config.from_dict(_rt_json(model, "config"))
        self.classes: list[str] = _rt_json(model, "classes")
        self.cat_ids: list[int] = _rt_json(model, "cat_ids") or list(range(len(self.classes)))
        self.score_threshold: float | None = _rt_json(model, "score_threshold")
        self.int8: int | None = _rt_json(model, "int8")  # calibration images of an int8 IR, None for fp32
        names = [o.get_any_name() for o in model.outputs]
        if names != list(OUTPUTS):
            raise CheckpointError(f"{path} has outputs {names}, not dinokit's {list(OUTPUTS)}")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS[precision]}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"OpenVINO cannot compile {path}: {_first_line(exc)}") from None
        self.path, self.precision = path, precision

    def __call__(self, images: Tensor, masks: Tensor, orig_sizes: Tensor) -> dict[str, Tensor]:
        """Tensors in (any device), named outputs out as CPU tensors (copies, not OpenVINO's buffers)."""
        feed = {
            "images": images.detach().float().cpu().numpy(),  # (B, 3, H, W)
            "masks": masks.detach().bool().cpu().numpy(),  # (B, H, W)
            "orig_sizes": orig_sizes.detach().long().cpu().numpy(),  # (B, 2) [h, w]
        }
        try:
            values = self.compiled(feed)
        except Exception as exc:  # noqa: BLE001
            raise DinokitError(
                f"OpenVINO failed on a {tuple(images.shape[-2:])} input ({_first_line(exc)}); "
                f"images must give at least {self.cfg.model.num_queries} encoder tokens"
            ) from None
        return {name: torch.from_numpy(values[self.compiled.output(name)]) for name in OUTPUTS}

    def detect(self, images: Tensor, masks: Tensor, orig_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Per image scores, labels and xyxy pixel boxes, as `postprocess` returns them."""
        out = self(images, masks, orig_sizes)
        return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(out["scores"], out["labels"], out["boxes"])]


def _check_ir_root(path: Path) -> None:
    """CheckpointError unless `path` is XML whose root element is an IR's <net>. Checked before
    OpenVINO reads it: OpenVINO offers a file no frontend claims to all of them (TensorFlow's
    included, which logs parse errors of its own)."""
    from xml.etree.ElementTree import ParseError, iterparse

    try:
        _, root = next(iterparse(str(path), events=("start",)))
    except (ParseError, StopIteration) as exc:
        raise CheckpointError(f"{path} is not an OpenVINO IR (not an XML file: {_first_line(exc)})") from None
    if root.tag != "net":
        raise CheckpointError(f"{path} is not an OpenVINO IR (its root element is <{root.tag}>, not <net>)")


def _first_line(exc: BaseException) -> str:
    """OpenVINO's message without its 'Exception from src/...:N:' location lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Exception from ")] or lines
    return (lines[0] if lines else type(exc).__name__)[:200]
