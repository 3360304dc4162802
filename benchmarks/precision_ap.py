"""What `--precision bf16` costs in AP: (1) one checkpoint evaluated in fp32 and in bf16 on its
validation split, same process; (2) the tiny model trained to the same step count in fp32 and in
bf16 (same seed and data), each run's final AP and training time.

    python benchmarks/precision_ap.py [CHECKPOINT] [--steps 300] [--threads N] [--json FILE] [--smoke]

Without CHECKPOINT part (1) uses the checkpoint part (2) trains in fp32. --smoke shrinks the
shapes data and the step count so that both parts finish in a minute or two: a check that it
works, not a measurement. Runs go to a temporary folder unless --out is given.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from dinokit.config import apply_overrides, load_preset
import dinokit
from dinokit.files import write_json
from dinokit.runtime.allocator import tune_allocator
from dinokit.training.trainer import train

SMOKE = ["data.shapes_train=8", "data.shapes_val=4", "data.shapes_size=64", "data.image_size=64",
         "data.min_size=64", "train.batch_size=4"]


def train_run(precision: str, steps: int, out: Path, smoke: bool) -> dict[str, Any]:
    """Train the tiny preset for `steps` in `precision`; AP and time of the final evaluation."""
    sets = (SMOKE if smoke else []) + [f"train.steps={steps}", "train.time_budget=0", "train.device=cpu",
                                       f"train.precision={precision}", f"train.out={out}", f"train.name={precision}"]
    cfg = apply_overrides(load_preset("tiny"), sets)
    result = train(cfg, progress=False)
    last = result.history[-1]
    return {"precision": precision, "steps": result.steps, "AP": last["AP"], "AP50": last["AP50"],
            "train_seconds": last["train_seconds"], "run_dir": str(result.run_dir)}


def eval_both(checkpoint: Path, repeats: int) -> dict[str, Any]:
    """AP and the fastest of `repeats` evaluation times of one checkpoint in fp32 and bf16."""
    rows: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        times, metrics = [], {}
        for _ in range(repeats):
            start = time.perf_counter()
            metrics = dinokit.load(checkpoint, "cpu", precision).evaluate()
            times.append(time.perf_counter() - start)
        rows[precision] = {"AP": metrics["AP"], "AP50": metrics["AP50"], "AP75": metrics["AP75"], "eval_s": min(times)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default=None)
    parser.add_argument("--steps", type=int, default=300, help="training steps of each precision's run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2, help="evaluations per precision; the fastest is kept")
    parser.add_argument("--out", default=None, help="runs folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny data and 2 steps: a quick check")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_allocator()
    steps, repeats = (2, 1) if args.smoke else (args.steps, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        trained = {p: train_run(p, steps, out, args.smoke) for p in ("fp32", "bf16")}
        checkpoint = Path(args.checkpoint or Path(trained["fp32"]["run_dir"]) / "best.pt")
        evaluated = eval_both(checkpoint, repeats)
    for p, r in evaluated.items():
        print(f"eval  {p}: AP {100 * r['AP']:.2f}  AP50 {100 * r['AP50']:.2f}  AP75 {100 * r['AP75']:.2f}  "
              f"{r['eval_s']:.1f} s", flush=True)
    for p, r in trained.items():
        print(f"train {p}: {r['steps']} steps, AP {100 * r['AP']:.2f}  AP50 {100 * r['AP50']:.2f}  "
              f"train {r['train_seconds']:.1f} s", flush=True)
    eval_delta = 100 * (evaluated["bf16"]["AP"] - evaluated["fp32"]["AP"])
    train_delta = 100 * (trained["bf16"]["AP"] - trained["fp32"]["AP"])
    print(f"bf16 vs fp32: same checkpoint {eval_delta:+.2f} AP points ({checkpoint}); "
          f"trained {train_delta:+.2f} AP points" + ("  [SMOKE: not a measurement]" if args.smoke else ""))
    if args.json:
        write_json(args.json, {
            "checkpoint": str(checkpoint), "threads": args.threads, "smoke": args.smoke, "eval": evaluated,
            "trained": trained, "eval_ap_change_points": eval_delta, "train_ap_change_points": train_delta,
        })


if __name__ == "__main__":
    main()
