"""How fast dinokit runs on this CPU, how far from the matrix-multiply bound, and against a peer.

    python benchmarks/speed.py [--cases NAME ...] [--repeats N] [--threads N] [--json FILE]
                               [--peers] [--compile] [--quantize int8] [--smoke]
                               [--precision fp32 bf16 ...] [--device cpu|cuda] [--rounds N]
                               [--compile-matrix]

Cases: r50-4scale inference at 1x3x800x1216 and training steps (forward + loss + backward,
denoising on, 5 random boxes per image) at 2x3x320x320 and 2x3x512x512; the tiny preset at its
own size (inference 1x3x128x128, training step 8x3x128x128). Random weights, nothing downloaded.

Each case (and each implementation, with --peers: HF transformers' Deformable DETR, see
peers.py) runs in its own subprocess at the same thread count, so that its peak RSS is its own.
The child runs one warm-up, times --repeats runs and reports the median and its peak RSS, then
counts the model's FLOPs (one forward, or forward + backward, under FlopCounterMode). The parent
times a 2048^3 fp32 matmul at the same thread count: GFLOP / that rate is the time the case would
take if it ran at matmul speed throughout ("bound"), and time / bound says how far from it it is.

--precision runs every case once per precision, dinokit and HF under the same
`torch.autocast` (bf16, or fp16 on CUDA), each in its own process. Jobs go case by case,
precision by precision, dinokit then HF, so that the host's drift hits both implementations
equally; --rounds N repeats the whole sequence. The matmul rate (fp32, and the case's precision)
is measured right before each job, and that job's bound uses it. --json keeps the fp32 (first
round) figures under `cases` and adds a flat `records` list, one per (case, impl, precision,
round), from which every ratio can be recomputed.

--compile runs dinokit compiled: the inference model, or for a training case the training step
as `dinokit train --compile` runs it (training/compiled.py: model and criterion parts, disk cache
under $DINOKIT_CACHE/compile; the warm-up run compiles or loads from that cache). --compile-matrix
runs every dinokit job twice, eager then compiled, next to each other (HF once, eager); the
"eager/this" column is the same case, precision and round eager over this row.

--smoke shrinks the r50 cases (1x3x256x256, 2x3x224x224 twice) and runs each once: a check
that everything works in a few minutes, not a measurement.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import peers  # benchmarks/ is on sys.path when this file is run as a script
from dinokit.files import write_json


@dataclass(frozen=True)
class Case:
    preset: str
    train: bool
    batch: int
    height: int
    width: int
    repeats: int  # default; --repeats replaces it
    peer: bool  # whether --peers also runs the HF model on it
    boxes: int = 5  # random ground-truth boxes per image (training)


# ~20 s per r50 inference and 15-30 s per r50 training step on 2 cores: with the FLOP-counting
# run, 3 repeats keep `--peers` (both implementations) well inside 20 minutes.
CASES: dict[str, Case] = {
    "r50-infer-800x1216": Case("r50-4scale", False, 1, 800, 1216, repeats=3, peer=True),
    "r50-train-2x320": Case("r50-4scale", True, 2, 320, 320, repeats=3, peer=True),
    "r50-train-2x512": Case("r50-4scale", True, 2, 512, 512, repeats=3, peer=True),
    "tiny-infer": Case("tiny", False, 1, 128, 128, repeats=10, peer=False),
    "tiny-train": Case("tiny", True, 8, 128, 128, repeats=10, peer=False),  # the preset's batch 8
}
# (batch, height, width). No smaller: HF's two-stage top-k needs >= 900 encoder tokens (224x224
# gives 1045 over strides 8-64); dinokit takes min(900, tokens) and would run at 128x128.
SMOKE_SHAPES: dict[str, tuple[int, int, int]] = {
    "r50-infer-800x1216": (1, 256, 256),
    "r50-train-2x320": (2, 224, 224),
    "r50-train-2x512": (2, 224, 224),
}
IMPLS = ("dinokit", "hf")
MM_SIZE = 2048
PRECISIONS = ("fp32", "bf16", "fp16")
LOW_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def case_for(name: str, smoke: bool) -> Case:
    """The case as run: --smoke makes the r50 shapes small and repeats 1."""
    case = CASES[name]
    if smoke and name in SMOKE_SHAPES:
        batch, height, width = SMOKE_SHAPES[name]
        case = replace(case, batch=batch, height=height, width=width, repeats=1)
    return case


# --------------------------------------------------------------------------- child: one case


def random_batch(case: Case, num_classes: int, seed: int = 0) -> tuple[Tensor, Tensor, list[dict[str, Tensor]]]:
    """Images in [0, 1], no padding, and `case.boxes` random cxcywh boxes per image."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(case.batch, 3, case.height, case.width, generator=gen)
    masks = torch.zeros(case.batch, case.height, case.width, dtype=torch.bool)
    targets = []
    for _ in range(case.batch):
        centres = 0.2 + 0.6 * torch.rand(case.boxes, 2, generator=gen)
        sizes = 0.05 + 0.3 * torch.rand(case.boxes, 2, generator=gen)
        labels = torch.randint(0, num_classes, (case.boxes,), generator=gen)
        targets.append({"boxes": torch.cat((centres, sizes), 1), "labels": labels})
    return images, masks, targets


def dinokit_step(
    model: nn.Module, criterion: nn.Module, images: Tensor, masks: Tensor,
    targets: list[dict[str, Tensor]], train: bool, no_grad: bool = True, compiled: bool = False,
) -> Callable[[], None]:
    """One inference (eval) or forward + loss + backward (train mode, so denoising is on);
    `compiled`: the training step as `dinokit train --compile` runs it."""
    import copy

    from dinokit.training.compiled import TrainingStep

    model.train(train)
    # a copy of the criterion: compiling replaces its tensor parts, the FLOP count wants them eager
    runner = TrainingStep(model, copy.deepcopy(criterion) if compiled else criterion, compiled)

    def infer() -> None:
        if no_grad:
            with torch.inference_mode():  # as dinokit predict and eval run
                model(images, masks)
        else:
            model(images, masks)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        runner(images, masks, targets)[1]["loss"].backward()

    return train_step if train else infer


def count_gflop(model: nn.Module, step: Callable[[], None], train: bool) -> tuple[float, float]:
    """GFLOP of one run of `step` on the eager fp32 model (before any --compile / --quantize), and
    its wall time. Inference runs with requires_grad off instead of under no_grad, which trips
    FlopCounterMode's module tracker."""
    saved = [p.requires_grad for p in model.parameters()]
    if not train:
        for p in model.parameters():
            p.requires_grad_(False)
    start = time.perf_counter()
    try:
        with FlopCounterMode(display=False) as counter:
            step()
    finally:
        for p, flag in zip(model.parameters(), saved):
            p.requires_grad_(flag)
    return counter.get_total_flops() / 1e9, time.perf_counter() - start


def time_runs(step: Callable[[], None], repeats: int, device: torch.device | None = None) -> list[float]:
    """Wall seconds per run; on CUDA each run waits for the device (kernels are asynchronous)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def under_precision(step: Callable[[], None], precision: str, device: torch.device) -> Callable[[], None]:
    """`step` inside the autocast that `dinokit --precision` uses; both implementations get this."""
    if precision == "fp32":
        return step

    def run() -> None:
        with torch.autocast(device.type, dtype=LOW_DTYPES[precision]):
            step()

    return run


def build(impl: str, case: Case) -> tuple[nn.Module, nn.Module | None, int, dict[str, Any]]:
    """The model (random weights: load_weights=False keeps r50's frozen-BatchNorm structure
    without fetching anything), its criterion, the class count and what was built."""
    if impl == "hf":
        model = peers.build_model(num_labels=91)
        return model, None, 91, peers.config_summary(model)
    from dinokit.config import load_preset
    from dinokit.loss.criterion import build_criterion
    from dinokit.model.dino import build_model

    cfg = load_preset(case.preset)
    model = build_model(cfg.model, load_weights=False)
    params = list(model.parameters())
    info = {"preset": case.preset, "weights": "random (load_weights=False)", "num_classes": cfg.model.num_classes,
            "denoising": cfg.model.denoising, "num_queries": cfg.model.num_queries,
            "parameters": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad)}
    return model, build_criterion(cfg.model), cfg.model.num_classes, info


def run_child(name: str, impl: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build, optionally compile / quantize, warm up once, time the repeats, record the peak RSS,
    then count FLOPs. Everything the parent prints comes from this dict."""
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # interpreter + torch, no model
    if impl == "dinokit":  # what the dinokit command does before any work
        from dinokit.runtime.allocator import tune_allocator

        tune_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    case = case_for(name, args.smoke)
    repeats = args.repeats or case.repeats
    device, precision = torch.device(args.device), args.precision[0]
    start = time.perf_counter()
    model, criterion, num_classes, info = build(impl, case)
    model.to(device)
    if criterion is not None:
        criterion.to(device)
    build_s = time.perf_counter() - start
    images, masks, targets = random_batch(case, num_classes)
    images, masks = images.to(device), masks.to(device)
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]

    def make(m: nn.Module, no_grad: bool = True, compiled: bool = False) -> Callable[[], None]:
        if impl == "hf":
            return peers.make_step(m, images, masks, targets, case.train, no_grad)
        return dinokit_step(m, criterion, images, masks, targets, case.train, no_grad, compiled)

    fp32_model = model
    variant: dict[str, Any] = {"compile": False, "quantize": None}
    if impl == "dinokit" and args.quantize and not case.train:
        from dinokit.infer.speed import quantize_dynamic_int8

        model = quantize_dynamic_int8(model) or model
        variant["quantize"] = args.quantize
    if impl == "dinokit" and args.compile:
        if not case.train:  # a training case compiles its whole step (training/compiled.py)
            from dinokit.runtime.compile import compile_model

            model = compile_model(model)
        variant["compile"] = True
    step = under_precision(make(model, compiled=variant["compile"] and case.train), precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup_s = time_runs(step, 1, device)[0]
    times = time_runs(step, repeats, device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the peak of the runs themselves
    cuda_peak = torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else None
    gflop, flop_run_s = count_gflop(fp32_model, make(fp32_model, no_grad=False), case.train)  # after: own peak
    return {
        "precision": precision, "device": str(device), "peak_cuda_gib": cuda_peak,
        "case": name, "impl": impl, "train": case.train, "shape": [case.batch, 3, case.height, case.width],
        "boxes_per_image": case.boxes if case.train else 0, "threads": torch.get_num_threads(),
        "repeats": repeats, "times_s": times, "median_s": statistics.median(times), "gflop": gflop,
        "build_s": build_s, "flop_run_s": flop_run_s, "warmup_s": warmup_s, **variant,
        "rss_kib": rss, "rss_imports_kib": rss_imports,
        "model": info,
    }


# --------------------------------------------------------------------------- parent


def matmul_rate(
    threads: int, size: int = MM_SIZE, repeats: int = 5, precision: str = "fp32", device: str = "cpu"
) -> dict[str, Any]:
    """GFLOP/s of a square torch.mm in `precision` (bf16/fp16 operands) at `threads`: the best of
    `repeats` after a warm-up."""
    torch.set_num_threads(threads)
    dtype = LOW_DTYPES.get(precision, torch.float32)
    dev = torch.device(device)
    a, b = (torch.randn(size, size, device=dev).to(dtype) for _ in range(2))
    torch.mm(a, b)
    times = time_runs(lambda: torch.mm(a, b), repeats, dev)
    gflop = 2 * size**3 / 1e9
    return {"size": size, "threads": threads, "precision": precision, "times_s": times, "gflop": gflop,
            "gflops_best": gflop / min(times), "gflops_median": gflop / statistics.median(times)}


def launch(name: str, impl: str, args: argparse.Namespace, precision: str = "fp32",
           compiled: bool | None = None) -> dict[str, Any]:
    """Run one case in a fresh interpreter; a failure is recorded, not raised (long runs go on)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "case.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--case", name, "--impl", impl,
               "--json-out", str(out), "--threads", str(args.threads), "--precision", precision,
               "--device", args.device]
        cmd += ["--repeats", str(args.repeats)] if args.repeats else []
        cmd += ["--smoke"] if args.smoke else []
        cmd += ["--compile"] if (args.compile if compiled is None else compiled) else []
        cmd += ["--quantize", args.quantize] if args.quantize else []
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not out.is_file():
            tail = ((proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"])[-20:]
            return {"case": name, "impl": impl, "precision": precision,
                    "error": f"exit {proc.returncode}: {tail[-1].strip()}",
                    "stderr_tail": tail, "wall_s": wall}
        result = json.loads(out.read_text())
    result["wall_s"] = wall
    return result


def add_bound(result: dict[str, Any], rate: float) -> None:
    """bound = GFLOP at the matmul rate; ratio = measured median / bound."""
    if "error" in result:
        return
    result["bound_s"] = result["gflop"] / rate
    result["ratio"] = result["median_s"] / result["bound_s"]
    result["rss_gib"] = result["rss_kib"] / 1024**2


def render(records: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """One row per job: HF rows carry HF time / dinokit time of the same case, precision and
    round; low-precision dinokit rows carry fp32 time / their time (the same case and round)."""
    from rich.console import Console
    from rich.table import Table

    flags = [f for f, on in (("compile", args.compile), (f"quantize {args.quantize}", args.quantize)) if on]
    title = (f"{args.threads} thread(s) on {args.device}, matmul rate measured before each job"
             + (f", dinokit with {', '.join(flags)}" if flags else "")
             + (", SMOKE shapes (not a measurement)" if args.smoke else ""))
    table = Table(title=title)
    for col in ("case", "impl", "prec", "round", "input", "runs", "median s", "GFLOP", "matmul GFLOP/s",
                "time/bound", "peak RSS GiB", "HF/dinokit", "fp32/this", "eager/this"):
        table.add_column(col, justify="left" if col in ("case", "impl", "prec", "input") else "right")
    for r in records:
        if "error" in r:
            table.add_row(r["case"], r["impl"], r["precision"], str(r["round"]), "[red]failed[/red]", *[""] * 9)
            continue
        shape = "x".join(map(str, r["shape"])) + (" train" if r["train"] else "")
        eager_only = False if args.compile_matrix else None  # the matrix compares with its eager rows
        peer = find(records, r["case"], "dinokit", r["precision"], r["round"], eager_only) if r["impl"] == "hf" else None
        base = find(records, r["case"], r["impl"], "fp32", r["round"], eager_only)  # fp32 of the same round
        base = base if base is not r else None
        eager = find(records, r["case"], r["impl"], r["precision"], r["round"], False) if r.get("compile") else None
        label = r["impl"] + (" +compile" if r.get("compile") else "") + (" +int8" if r.get("quantize") else "")
        table.add_row(r["case"], label, r["precision"], str(r["round"]), shape, str(r["repeats"]),
                      f"{r['median_s']:.3f}", f"{r['gflop']:.1f}", f"{r['matmul_gflops_precision']:.0f}",
                      f"{r['ratio']:.1f}", f"{r['peak_rss_gib']:.2f}",
                      f"{r['median_s'] / peer['median_s']:.2f}" if peer else "",
                      f"{base['median_s'] / r['median_s']:.2f}" if base else "",
                      f"{eager['median_s'] / r['median_s']:.2f}" if eager else "")
    console = Console()
    if not console.is_terminal:  # piped to a file: rich would wrap at 80 columns
        console = Console(width=170)
    console.print(table)
    for r in records:
        if "error" in r:
            console.print(f"{r['case']} {r['impl']} {r['precision']} failed: {r['error']}", markup=False, highlight=False)


def find(records: list[dict[str, Any]], case: str, impl: str, precision: str, round_: int,
         compiled: bool | None = None) -> dict[str, Any] | None:
    """The successful record of (case, impl, precision, round[, compiled]), or None."""
    for r in records:
        if (r["case"], r["impl"], r["precision"], r["round"]) == (case, impl, precision, round_) and "error" not in r:
            if compiled is None or bool(r.get("compile")) == compiled:
                return r
    return None


def check_options(args: argparse.Namespace) -> None:
    """Fail before the first case, with one line, on an option this install cannot honour."""
    if args.peers and not peers.available():
        sys.exit(peers.INSTALL_HINT)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available here")
    if "fp16" in args.precision and not args.device.startswith("cuda"):
        sys.exit("--precision fp16 needs --device cuda (bf16 is the CPU's low precision)")
    if args.quantize:
        try:
            speed = importlib.import_module("dinokit.infer.speed")
        except ImportError:
            speed = None
        if not hasattr(speed, "quantize_dynamic_int8"):
            sys.exit("--quantize int8: this dinokit has no dinokit.infer.speed.quantize_dynamic_int8 yet")


def job_list(args: argparse.Namespace) -> list[tuple[int, str, str, str, bool]]:
    """(round, case, precision, impl, compiled) in run order: dinokit (eager, then compiled with
    --compile-matrix) and HF alternate within each (case, precision), so drift of the host between
    jobs hits all alike."""
    impls = lambda name: [i for i in IMPLS if i == "dinokit" or (args.peers and CASES[name].peer)]  # noqa: E731
    modes = lambda impl: [False, True] if args.compile_matrix and impl == "dinokit" else [args.compile and impl == "dinokit"]  # noqa: E731
    return [(r, n, p, i, c) for r in range(1, args.rounds + 1) for n in args.cases for p in args.precision
            for i in impls(n) for c in modes(i)]


def record_of(r: dict[str, Any], round_: int, mm: dict[str, Any], mm_low: dict[str, Any]) -> dict[str, Any]:
    """The flat `records` entry of one job (the fields a ratio needs, and what it ran against)."""
    out = {"case": r["case"], "impl": r["impl"], "precision": r["precision"], "round": round_,
           "matmul_gflops_fp32": mm["gflops_best"], "matmul_gflops_precision": mm_low["gflops_best"]}
    if "error" in r:
        return {**out, "error": r["error"]}
    keys = ("median_s", "times_s", "gflop", "bound_s", "ratio", "train", "shape", "repeats", "threads", "device",
            "peak_cuda_gib", "compile", "quantize", "wall_s")
    return {**out, **{k: r.get(k) for k in keys}, "peak_rss_gib": r["rss_gib"]}


def run_parent(args: argparse.Namespace) -> None:
    wall_start = time.perf_counter()
    check_options(args)
    if args.quantize and any(CASES[n].train for n in args.cases):
        print("--quantize applies to the inference cases only; training cases run in fp32", flush=True)
    jobs = job_list(args)
    results: dict[str, dict[str, dict[str, Any]]] = {}  # today's layout: fp32 (or the first precision), round 1
    records: list[dict[str, Any]] = []
    first_mm: dict[str, Any] | None = None
    for i, (round_, name, precision, impl, compiled) in enumerate(jobs, 1):
        mm = matmul_rate(args.threads, device=args.device)
        mm_low = mm if precision == "fp32" else matmul_rate(args.threads, precision=precision, device=args.device)
        first_mm = first_mm or mm
        r = launch(name, impl, args, precision, compiled)
        add_bound(r, mm_low["gflops_best"])
        records.append(record_of(r, round_, mm, mm_low))
        if round_ == 1 and precision == args.precision[0] and compiled == (args.compile and not args.compile_matrix):
            results.setdefault(name, {})[impl] = {**r, "matmul_gflops": mm["gflops_best"]}
        done = (f"FAILED {r['error']}" if "error" in r else
                f"median {r['median_s']:.3f} s of {r['repeats']}, {r['gflop']:.1f} GFLOP, "
                f"x{r['ratio']:.1f} bound, {r['rss_gib']:.2f} GiB")
        mode = " compiled" if compiled else ""
        print(f"[{i}/{len(jobs)}] {name} {impl}{mode} {precision} round {round_}: {done} ({r['wall_s']:.0f} s; matmul "
              f"{mm['gflops_best']:.0f} fp32, {mm_low['gflops_best']:.0f} {precision} GFLOP/s)", flush=True)
    mm_after = matmul_rate(args.threads, device=args.device)  # the machine may be busier at the end
    render(records, args)
    for name, by_impl in results.items():
        if "median_s" in by_impl.get("hf", {}) and "median_s" in by_impl.get("dinokit", {}):
            by_impl["hf_over_dinokit"] = by_impl["hf"]["median_s"] / by_impl["dinokit"]["median_s"]
    total = time.perf_counter() - wall_start
    print(f"matmul at the end {mm_after['gflops_best']:.1f} GFLOP/s; "
          f"total wall time {total:.0f} s ({total / 60:.1f} min)")
    if args.json:
        env = {"torch": torch.__version__, "transformers": peers.version(), "python": platform.python_version(),
               "machine": platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
               "matmul": first_mm, "matmul_end": mm_after, "rate_used_gflops": "per job (records)",
               "compile": args.compile, "quantize": args.quantize, "smoke": args.smoke, "argv": sys.argv[1:],
               "device": args.device, "precisions": args.precision, "rounds": args.rounds}
        cases = {n: {"definition": asdict(case_for(n, args.smoke)), **by_impl} for n, by_impl in results.items()}
        payload = {"environment": env, "cases": cases, "records": records, "total_wall_s": total}
        write_json(args.json, payload)
        print(f"wrote {args.json}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--repeats", type=int, default=0, help="timed runs per case (default: 3 r50, 10 tiny)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", default=None, help="write every figure to this file")
    parser.add_argument("--peers", action="store_true", help="also time HF Deformable DETR on the r50 cases")
    parser.add_argument("--compile", action="store_true", help="torch.compile the dinokit model (training: the step)")
    parser.add_argument("--compile-matrix", action="store_true", help="every dinokit job eager and compiled, interleaved")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="dinokit inference cases only")
    parser.add_argument("--smoke", action="store_true", help="small r50 shapes, 1 run: a quick check")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"],
                        help="one or more: every case runs once per precision (autocast for both impls)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole interleaved job sequence")
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--impl", choices=IMPLS, default="dinokit", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 0 or args.threads < 1 or args.rounds < 1:
        parser.error("--repeats must be >= 0, --threads >= 1 and --rounds >= 1")
    return args


def main() -> None:
    args = parse_args()
    if args.case:
        result = run_child(args.case, args.impl, args)
        write_json(args.json_out, result)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
