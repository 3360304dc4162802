"""What `--quantize int8` costs in AP and buys in time: one checkpoint evaluated in fp32 and in
int8 on its validation split (the built-in shapes data for the default run), same process.

    python benchmarks/quantize_ap.py [CHECKPOINT] [--threads 1] [--repeats 2]

Without CHECKPOINT it uses the latest run's best.pt (train one first: `dinokit train`).
"""

from __future__ import annotations

import argparse
import time

import torch

from dinokit.runtime.allocator import tune_allocator
from dinokit.checkpoint import latest_run_checkpoint
import dinokit
from dinokit.files import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default=None)
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2, help="evaluations per mode; the fastest is kept")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_allocator()
    path = args.checkpoint or latest_run_checkpoint(args.runs)
    rows = {}
    for mode in ("none", "int8"):
        times, metrics = [], {}
        for _ in range(args.repeats):
            start = time.perf_counter()
            metrics = dinokit.load(path, "cpu", quantize=mode).evaluate()
            times.append(time.perf_counter() - start)
        rows[mode] = {"AP": metrics["AP"], "AP50": metrics["AP50"], "AP75": metrics["AP75"], "eval_s": min(times)}
        print(f"{mode:5s} AP {100 * metrics['AP']:.2f}  AP50 {100 * metrics['AP50']:.2f}  "
              f"AP75 {100 * metrics['AP75']:.2f}  eval {min(times):.1f} s", flush=True)
    delta = 100 * (rows["int8"]["AP"] - rows["none"]["AP"])
    speedup = rows["none"]["eval_s"] / rows["int8"]["eval_s"]
    print(f"int8: AP change {delta:+.2f} points, evaluation {speedup:.2f}x faster ({path})")
    if args.json:
        write_json(args.json, {"checkpoint": str(path), "threads": args.threads, **rows,
                               "ap_change_points": delta, "speedup": speedup})


if __name__ == "__main__":
    main()
