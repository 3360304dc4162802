"""Eager PyTorch, onnxruntime and OpenVINO side by side on this CPU: time per image, and AP.

    python benchmarks/openvino_speed.py [--presets tiny r50-4scale] [--rounds 3] [--repeats N]
                                        [--threads 2] [--int8 N] [--smoke] [--json FILE]
    python benchmarks/openvino_speed.py --ap CHECKPOINT [--int8 100] [--json FILE]

Speed (the default): each preset gets random weights (perturbed as in onnx_speed.py, so that no
encoder scores tie), is exported once to ONNX and to an OpenVINO IR (and, with --int8, to an int8
IR quantised by NNCF on N random images of the job's size: calibration content does not change
the speed), and then every backend runs one batch-1 image (tiny 128x128, r50 800x1216; --smoke:
r50 at 256x256, one round of 2 repeats) in its own process: eager torch fp32, onnxruntime fp32,
OpenVINO fp32, OpenVINO bf16 (its INFERENCE_PRECISION_HINT), eager torch bf16 (autocast), and
OpenVINO int8. The jobs alternate within each round (A, B, C, ..., then again), the fp32 matmul
rate is measured right before each job, and each job's time (detect: forward and postprocessing,
the median of --repeats after a warm-up) is divided by the eager fp32 time of the same round;
the table shows the median of those ratios over rounds. Set --threads: each runtime gets that many.

AP (--ap CHECKPOINT, a trained one): the checkpoint is exported to ONNX, an fp32 IR and (with --int8)
an int8 IR calibrated on N training images of its data, and each backend evaluates the validation
split of the checkpoint's data through `Detector.evaluate`, in this process (AP does not depend on
the load; the eval times printed beside it do).

Needs the [onnx] and [openvino] extras. Time only on a quiet machine (see /work/shared/TIMING.md
or the README's Speed section): OpenMP threads that meet a busy core slow down several-fold.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from dinokit.files import write_json

SIZES = {"tiny": (128, 128), "r50-4scale": (800, 1216)}  # (H, W) of the batch-1 image
SMOKE_SIZES = {"r50-4scale": (256, 256)}  # 1360 encoder tokens: enough for the 900 queries
JOBS = ("torch-fp32", "onnxruntime-fp32", "openvino-fp32", "openvino-bf16", "torch-bf16", "openvino-int8")


# --------------------------------------------------------------------------- child: one timed job


def detect_fn(job: str, folder: Path, threads: int) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any]:
    """The runtime's detect(images, masks, orig_sizes) for `job`, on `threads` threads."""
    runtime, precision = job.rsplit("-", 1)
    if runtime == "torch":
        from dinokit.infer.precision import autocast
        from dinokit.interop.load import model_and_checkpoint
        from dinokit.model.postprocess import postprocess

        model, cfg, _ = model_and_checkpoint(folder / "model.pt", torch.device("cpu"))

        def run(images: torch.Tensor, masks: torch.Tensor, sizes: torch.Tensor) -> Any:
            with torch.inference_mode(), autocast(precision, torch.device("cpu")):
                return postprocess(model(images, masks), sizes, cfg.model.num_select)

        return run
    if runtime == "onnxruntime":
        import onnxruntime as ort

        from dinokit.infer.export import OnnxDetector

        detector = OnnxDetector(folder / "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        detector.session = ort.InferenceSession(str(folder / "model.onnx"), options,
                                                providers=["CPUExecutionProvider"])
        return detector.detect
    from dinokit.infer.openvino_ir import OpenVinoDetector

    xml = folder / ("int8.xml" if precision == "int8" else "model.xml")
    return OpenVinoDetector(xml, "fp32" if precision == "int8" else precision, threads).detect


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    h, w = args.size
    images = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))  # (1, 3, H, W) in [0, 1]
    masks, sizes = torch.zeros(1, h, w, dtype=torch.bool), torch.tensor([[h, w]])
    start = time.perf_counter()
    detect = detect_fn(args.job, Path(args.folder), args.threads)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    detect(images, masks, sizes)  # warm-up: OpenVINO and onnxruntime finish compiling here
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        detect(images, masks, sizes)
        times.append(time.perf_counter() - start)
    return {"job": args.job, "times_s": times, "median_s": statistics.median(times), "load_s": load_s,
            "warmup_s": warmup_s, "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


# --------------------------------------------------------------------------- parent


def prepare(preset: str, folder: Path, size: tuple[int, int], int8: int) -> dict[str, float]:
    """Random-weight checkpoint of `preset` in `folder`, exported to model.onnx, model.xml and
    (int8 > 0) int8.xml; returns the export times."""
    from onnx_speed import perturb  # benchmarks/ is on sys.path when this file is run as a script

    from dinokit.checkpoint import make_checkpoint, save_checkpoint
    from dinokit.config import load_preset
    from dinokit.infer.export import export_onnx
    from dinokit.infer.openvino_ir import export_openvino
    from dinokit.model.dino import build_model

    cfg = load_preset(preset)
    torch.manual_seed(0)
    model = build_model(cfg.model, load_weights=False).eval()
    perturb(model)
    classes = [str(i) for i in range(cfg.model.num_classes)]
    ckpt = save_checkpoint(make_checkpoint(model.state_dict(), cfg, classes, list(range(len(classes)))),
                           folder / "model.pt")
    times = {}
    start = time.perf_counter()
    export_onnx(ckpt, folder / "model.onnx")
    times["onnx_export_s"] = time.perf_counter() - start
    start = time.perf_counter()
    export_openvino(ckpt, folder / "model.xml")
    times["openvino_export_s"] = time.perf_counter() - start
    if int8:
        import numpy as np
        import openvino as ov

        from dinokit.infer.openvino_int8 import quantize_int8

        gen = np.random.default_rng(0)
        h, w = size
        feeds = [{"images": gen.random((1, 3, h, w), dtype=np.float32), "masks": np.zeros((1, h, w), dtype=bool),
                  "orig_sizes": np.asarray([[h, w]], dtype=np.int64)} for _ in range(int8)]
        start = time.perf_counter()
        ov.save_model(quantize_int8(ov.Core().read_model(str(folder / "model.xml")), feeds),
                      str(folder / "int8.xml"), compress_to_fp16=False)
        times["int8_quantize_s"] = time.perf_counter() - start
    return times


def launch(job: str, folder: Path, size: tuple[int, int], args: argparse.Namespace) -> dict[str, Any]:
    """One job in a fresh interpreter; a failure is recorded, not raised."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "job.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--job", job, "--folder", str(folder),
               "--size", f"{size[0]}x{size[1]}", "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--json-out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            tail = ((proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"])[-1]
            return {"job": job, "error": f"exit {proc.returncode}: {tail.strip()}"}
        return json.loads(out.read_text())


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    from speed import matmul_rate  # benchmarks/speed.py

    jobs = [j for j in JOBS if args.int8 or not j.endswith("int8")]
    records, exports = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        folders = {}
        for preset in args.presets:
            size = SMOKE_SIZES.get(preset, SIZES[preset]) if args.smoke else SIZES[preset]
            folders[preset] = (Path(scratch) / preset, size)
            folders[preset][0].mkdir()
            exports[preset] = prepare(preset, folders[preset][0], size, args.int8)
            print(f"{preset}: exported ({', '.join(f'{k} {v:.1f}' for k, v in exports[preset].items())})", flush=True)
        for round_ in range(args.rounds):
            for preset, (folder, size) in folders.items():
                for job in jobs:
                    rate = matmul_rate(args.threads)["gflops_best"]
                    result = {"preset": preset, "size": list(size), "round": round_, "matmul_gflops": rate,
                              **launch(job, folder, size, args)}
                    records.append(result)
                    shown = f"{result['median_s']:.4f} s" if "median_s" in result else result["error"]
                    print(f"round {round_} {preset} {job}: {shown} (matmul {rate:.0f} GFLOP/s)", flush=True)
    for r in records:  # this job's time over eager fp32's of the same preset and round
        base = next((b for b in records if (b["preset"], b["round"], b["job"]) == (r["preset"], r["round"],
                                                                                     "torch-fp32")), None)
        if base is not None and "median_s" in base and "median_s" in r:
            r["speedup_vs_torch_fp32"] = base["median_s"] / r["median_s"]
    rows = []
    for preset in args.presets:
        for job in jobs:
            mine = [r for r in records if r["preset"] == preset and r["job"] == job and "median_s" in r]
            if mine:
                rows.append({"preset": preset, "job": job, "median_s": statistics.median(r["median_s"] for r in mine),
                             "speedup_vs_torch_fp32": statistics.median(r["speedup_vs_torch_fp32"] for r in mine),
                             "rounds": len(mine)})
    print(f"\nmedian over rounds, batch 1, {args.threads} thread(s); speed-up = eager fp32 time / this time")
    print(f"{'preset':<12}{'job':<18}{'time':>11}{'speed-up':>10}")
    for row in rows:
        print(f"{row['preset']:<12}{row['job']:<18}{row['median_s']:>9.4f} s{row['speedup_vs_torch_fp32']:>9.2f}x")
    return {"threads": args.threads, "rounds": args.rounds, "repeats": args.repeats, "smoke": args.smoke,
            "exports": exports, "table": rows, "records": records}


def run_ap(args: argparse.Namespace) -> dict[str, Any]:
    import dinokit

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        detector = dinokit.load(args.ap, "cpu")
        onnx_file = detector.export(Path(scratch) / "model.onnx")
        xml = detector.export(Path(scratch) / "fp32", format="openvino")
        cases = [("torch-fp32", args.ap, "fp32"), ("torch-bf16", args.ap, "bf16"), ("onnxruntime-fp32", onnx_file, None),
                 ("openvino-fp32", xml, "fp32"), ("openvino-bf16", xml, "bf16")]
        if args.int8:
            int8_xml = detector.export(Path(scratch) / "int8", format="openvino", int8=args.int8)
            cases.append(("openvino-int8", int8_xml, "fp32"))
        for name, path, precision in cases:
            start = time.perf_counter()
            metrics = dinokit.load(path, "cpu", precision).evaluate(split=args.split)
            rows.append({"job": name, "AP": metrics["AP"], "AP50": metrics["AP50"], "AP75": metrics["AP75"],
                         "eval_s": time.perf_counter() - start})
            print(f"{name:<18} AP {100 * metrics['AP']:6.2f}  AP50 {100 * metrics['AP50']:6.2f}  "
                  f"AP75 {100 * metrics['AP75']:6.2f}  ({rows[-1]['eval_s']:.0f} s)", flush=True)
    ref = rows[0]
    for row in rows:
        row["AP_change_points"] = 100 * (row["AP"] - ref["AP"])
        row["AP50_change_points"] = 100 * (row["AP50"] - ref["AP50"])
    print("\nAP change against eager fp32 (COCO points): " + ", ".join(
        f"{r['job']} {r['AP_change_points']:+.2f} (AP50 {r['AP50_change_points']:+.2f})" for r in rows[1:]))
    return {"checkpoint": str(args.ap), "split": args.split, "int8_calibration": args.int8, "rows": rows}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "r50-4scale"], choices=sorted(SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per job (default 10, --smoke 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--int8", type=int, default=0, help="also an NNCF int8 IR, calibrated on N images")
    parser.add_argument("--smoke", action="store_true", help="r50 at 256x256, one round: a check, not a figure")
    parser.add_argument("--ap", default=None, help="a trained checkpoint: AP of each backend instead of speed")
    parser.add_argument("--split", default="val")
    parser.add_argument("--json", default=None, help="write every record to this file")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.smoke else 10
    if args.smoke:
        args.rounds = 1
    return args


def main() -> None:
    args = parse_args()
    if args.job:
        args.size = tuple(int(v) for v in args.size.split("x"))
        write_json(args.json_out, run_child(args))  # a scratch file the parent reads
        return
    result = run_ap(args) if args.ap else run_speed(args)
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
