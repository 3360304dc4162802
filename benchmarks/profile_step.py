"""Where a training step's time goes: by operator and by model part, against the matmul bound.

    python benchmarks/profile_step.py [--cases tiny-train r50-train-2x320] [--precision fp32 bf16]
                                      [--steps N] [--top N] [--threads N] [--compile] [--smoke]
                                      [--json FILE]

For each (case, precision) it builds the case as benchmarks/speed.py does (same shapes, random
weights, random boxes), with the trainer's optimiser (AdamW, the preset's groups) and the
trainer's `apply_gradients` (backward, clipping, step), warms up, then runs --steps steps under
torch.profiler and prints

- the top --top operators by self CPU time;
- the parts, from the `dinokit.<part>` record_function scopes in the model, criterion, optimiser
  and trainer: data, backbone, encoder, query_selection, denoising, decoder, matcher (costs +
  Hungarian), criterion (losses, matcher excluded), backward, optimiser; each part's ms per step,
  share of the step, its matmul/conv GFLOP (torch's FlopCounterMode; backward as a whole) and
  time over the bound = GFLOP / the matmul rate measured in this process (speed.matmul_rate).

Backward ops carry no forward scope, so the model parts are forward only and `backward` is the
whole backward. Under --compile the compiled graphs hide the model's inner scopes (their time
shows under the enclosing scope or as CompiledFunction operators). The profiler adds overhead:
compare parts with each other, and take step times from speed.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (benchmarks/speed.py: cases, batches, the matmul rate)

PARTS = ("data", "backbone", "encoder", "query_selection", "denoising", "decoder", "matcher", "criterion",
         "backward", "optimiser")
# model modules (FlopCounterMode names) whose forward FLOPs each part holds
PART_MODULES = {
    "backbone": ("DINO.backbone", "DINO.input_proj"),
    "encoder": ("DINO.encoder",),
    "query_selection": ("DINO.queries",),
    "denoising": ("DINO.denoising",),
    "decoder": ("DINO.decoder",),
    "criterion": ("SetCriterion",),
}


def build_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Model, criterion, optimiser and batch of a speed.py training case."""
    from dinokit.config import load_preset
    from dinokit.training.optim import build_optimizer

    case = speed.case_for(name, args.smoke)
    if not case.train:
        raise SystemExit(f"{name} is not a training case")
    model, criterion, num_classes, _ = speed.build("dinokit", case)
    optimizer = build_optimizer(model, load_preset(case.preset).train)
    return {"case": case, "model": model, "criterion": criterion, "optimizer": optimizer,
            "clip": load_preset(case.preset).train.clip_grad, "num_classes": num_classes}


def make_step(built: dict[str, Any], precision: str, compiled: bool):
    """One trainer-like step: batch (data), forward + loss (autocast), apply_gradients."""
    from dinokit.infer.precision import autocast, grad_scaler
    from dinokit.training.compiled import TrainingStep
    from dinokit.training.optim import apply_gradients

    case, model, criterion = built["case"], built["model"], built["criterion"]
    device = torch.device("cpu")
    runner = TrainingStep(model, criterion, compiled)
    scaler = grad_scaler(precision, device)
    model.train()

    def step() -> None:
        with record_function("dinokit.data"):
            images, masks, targets = speed.random_batch(case, built["num_classes"])
        with autocast(precision, device):
            _, losses = runner(images, masks, targets)
        apply_gradients(losses["loss"], built["optimizer"], scaler, model, built["clip"])

    return step


def part_gflop(built: dict[str, Any]) -> tuple[dict[str, float], float]:
    """Forward GFLOP per part (eager fp32) and the backward's GFLOP (total minus forward)."""
    case, model, criterion = built["case"], built["model"], built["criterion"]
    images, masks, targets = speed.random_batch(case, built["num_classes"])
    with FlopCounterMode(display=False) as forward:
        criterion(model(images, masks, targets), targets)
    counts = forward.get_flop_counts()
    per_part = {part: sum(sum(counts.get(m, {}).values()) for m in mods) / 1e9 for part, mods in PART_MODULES.items()}
    fwd = forward.get_total_flops() / 1e9
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as whole:
        criterion(model(images, masks, targets), targets)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return per_part, whole.get_total_flops() / 1e9 - fwd


def profile_case(name: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    built = build_case(name, args)
    gflop, backward_gflop = part_gflop(built)
    step = make_step(built, precision, args.compile)
    for _ in range(args.warmup):
        step()
    walls = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            walls.append(time.perf_counter() - start)
    rate = speed.matmul_rate(args.threads, precision=precision)["gflops_best"]
    averages = {e.key: e for e in prof.key_averages()}
    ms = {p: averages[f"dinokit.{p}"].cpu_time_total / 1e3 / args.steps if f"dinokit.{p}" in averages else 0.0
          for p in PARTS}
    ms["criterion"] = max(0.0, ms["criterion"] - ms["matcher"])  # the matcher runs inside the criterion scope
    step_ms = 1e3 * statistics.median(walls)
    gflop["backward"] = backward_gflop
    rows = []
    for part in PARTS:
        g = gflop.get(part, 0.0)
        bound = 1e3 * g / rate if g else 0.0
        rows.append({"part": part, "ms": ms[part], "share": ms[part] / step_ms, "gflop": g, "bound_ms": bound,
                     "over_bound": ms[part] / bound if bound else None})
    rows.append({"part": "other (Python, unscoped)", "ms": step_ms - sum(ms.values()),
                 "share": 1 - sum(ms.values()) / step_ms, "gflop": 0.0, "bound_ms": 0.0, "over_bound": None})
    operators = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)
    return {"case": name, "precision": precision, "compile": args.compile, "threads": args.threads,
            "steps": args.steps, "step_ms_median": step_ms, "matmul_gflops": rate, "parts": rows,
            "total_gflop": sum(gflop.values()), "operators": operators}


def render(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    bound_ms = 1e3 * result["total_gflop"] / result["matmul_gflops"]
    console.print(f"\n[bold]{result['case']} {result['precision']}{' compiled' if result['compile'] else ''}[/bold]: "
                  f"{result['step_ms_median']:.1f} ms/step under the profiler, {result['total_gflop']:.1f} GFLOP, "
                  f"matmul {result['matmul_gflops']:.0f} GFLOP/s -> bound {bound_ms:.1f} ms "
                  f"(x{result['step_ms_median'] / bound_ms:.1f})")
    table = Table(title="by part")
    for col in ("part", "ms/step", "share", "GFLOP", "bound ms", "time/bound"):
        table.add_column(col, justify="left" if col == "part" else "right")
    for r in result["parts"]:
        table.add_row(r["part"], f"{r['ms']:.1f}", f"{100 * r['share']:.0f}%", f"{r['gflop']:.2f}" if r["gflop"] else "",
                      f"{r['bound_ms']:.1f}" if r["bound_ms"] else "", f"{r['over_bound']:.1f}" if r["over_bound"] else "")
    console.print(table)
    console.print(f"top operators by self CPU time ({result['steps']} steps)", highlight=False)
    print(result["operators"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    train_cases = [n for n, c in speed.CASES.items() if c.train]
    parser.add_argument("--cases", nargs="+", choices=train_cases, default=["tiny-train", "r50-train-2x320"])
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=5, help="profiled steps per case")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--top", type=int, default=25, help="operators listed")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="the compiled training step (warm-up compiles)")
    parser.add_argument("--smoke", action="store_true", help="speed.py's small r50 shapes: a check, not a profile")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--steps >= 1, --warmup >= 0, --threads >= 1")
    torch.set_num_threads(args.threads)
    results = []
    for name in args.cases:
        # r50 in bf16 is not in the list; --precision applies to every case given
        for precision in args.precision:
            result = profile_case(name, precision, args)
            render(result)
            results.append(result)
    if args.json:
        from dinokit.files import write_json

        write_json(Path(args.json), {"argv": sys.argv[1:], "torch": torch.__version__, "results": results})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
