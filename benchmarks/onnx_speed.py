"""onnxruntime vs PyTorch inference time and parity on the CPU (run by hand).

    python benchmarks/onnx_speed.py --preset tiny --size 128x128 [--runs 5] [--threads 2]
    python benchmarks/onnx_speed.py --preset r50-4scale --size 800x1216 --runs 3

Builds the preset with random weights (no download; perturbed as the official_small reference
was, so that no two encoder scores tie), exports it to ONNX in a scratch folder and prints the
export time, the median time of one batch-1 forward in each runtime (after a warm-up run) and
the largest output difference. Compare at --threads 1 on a busy machine: intra-op threads that
wait for a core slow PyTorch's many small ops far more than onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dinokit.config import load_preset
from dinokit.checkpoint import make_checkpoint, save_checkpoint
from dinokit.infer.export import OnnxDetector, export_onnx
from dinokit.model.dino import build_model


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move weights off their initialisation (a fresh FrozenBatchNorm is the identity, which lets
    a ResNet-50's activations grow until many top-K scores tie and the selection order is noise)."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(0.02 * torch.randn(p.shape, generator=gen))
    for name, buf in model.named_buffers():
        if name.endswith("running_var"):
            buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
        elif name.endswith("running_mean"):
            buf.copy_(0.1 * torch.randn(buf.shape, generator=gen))
        elif name.endswith((".weight", ".bias")):  # FrozenBatchNorm2d keeps these as buffers
            buf.add_(0.1 * torch.randn(buf.shape, generator=gen))


def _median_time(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--size", default="128x128")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    cfg = load_preset(args.preset)
    torch.manual_seed(0)
    model = build_model(cfg.model, load_weights=False).eval()
    perturb(model)
    images, masks = torch.rand(1, 3, h, w), torch.zeros(1, h, w, dtype=torch.bool)
    sizes = torch.tensor([[h, w]])
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(make_checkpoint(model.state_dict(), cfg, [str(i) for i in range(cfg.model.num_classes)],
                                               list(range(cfg.model.num_classes))), Path(tmp) / "m.pt")
        start = time.perf_counter()
        export_onnx(ckpt, Path(tmp) / "m.onnx")
        export_s = time.perf_counter() - start
        detector = OnnxDetector(Path(tmp) / "m.onnx")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        detector.session = ort.InferenceSession(str(Path(tmp) / "m.onnx"), options, providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            torch_s = _median_time(lambda: model(images, masks), args.runs)
            ref = model(images, masks)
        onnx_s = _median_time(lambda: detector(images, masks, sizes), args.runs)
        out = detector(images, masks, sizes)
    print(json.dumps({
        "preset": args.preset, "size": [h, w], "threads": args.threads, "runs": args.runs,
        "export_s": round(export_s, 2), "torch_s": round(torch_s, 4), "onnxruntime_s": round(onnx_s, 4),
        "max_abs_diff": {k: float((out[k] - ref[k]).abs().max()) for k in ("pred_logits", "pred_boxes")},
    }, indent=2))


if __name__ == "__main__":
    main()
