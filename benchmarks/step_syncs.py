"""Seconds per training step (forward, loss with matching, backward, optimiser), for timing the
step before and after a change such as removing host synchronisations.

    python benchmarks/step_syncs.py                                  # tiny preset, device auto
    python benchmarks/step_syncs.py --device cuda --steps 50 --repeats 5
    python benchmarks/step_syncs.py --set model.dec_layers=6 --batch-size 4

The batches are drawn from the built-in shapes data first, so data loading is not timed. Each
repeat times `--steps` consecutive steps as one block with a single device synchronisation at
its end (timing each step alone would add the very wait being measured); it prints the median
and the spread of the repeats' seconds per step. Run it by hand on a quiet machine, once on
each commit to compare (`git stash` / `git checkout`), never in the tests.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from dinokit.config import apply_overrides, load_preset
from dinokit.runtime.device import process_device
from dinokit.training import distributed as dist_utils
from dinokit.training.trainer import Trainer

try:  # the benchmark also runs on commits before the trainer split, to time before and after
    from dinokit.training.signals import StopRequest
except ImportError:
    from dinokit.training.trainer import _StopRequest as StopRequest


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.field=value")
    args = parser.parse_args()
    if min(args.steps, args.repeats, args.batch_size) < 1 or args.warmup < 0:
        parser.error("--steps, --repeats and --batch-size must be at least 1, --warmup at least 0")

    cfg = apply_overrides(load_preset(args.preset), [
        f"train.batch_size={args.batch_size}", f"train.device={args.device}", "train.tensorboard=false",
        "train.steps=1000000", *args.overrides,
    ])
    device = process_device(cfg.train.device)
    info = dist_utils.init_distributed(device)
    with StopRequest() as stop:
        trainer = Trainer(cfg, device, info, False, None, stop)
        trainer.console.enabled = trainer.console.plain = False  # no step lines in the timings
        trainer.t0 = time.monotonic()
        total = args.warmup + args.steps * args.repeats
        batches = list(itertools.islice(itertools.cycle(trainer.batches.loader if hasattr(trainer, "batches") else trainer.loader), total))
        for batch in batches[: args.warmup]:
            trainer._train_step(*batch)
        per_step = []
        for r in range(args.repeats):
            block = batches[args.warmup + r * args.steps: args.warmup + (r + 1) * args.steps]
            sync(device)
            start = time.perf_counter()
            for batch in block:
                trainer._train_step(*batch)
            sync(device)
            per_step.append((time.perf_counter() - start) / len(block))
    params = sum(p.numel() for p in trainer.raw_model.parameters()) / 1e6
    print(f"{args.preset} ({params:.2f} M parameters), batch {args.batch_size}, {device}, torch {torch.__version__}")
    print(f"  {args.repeats} x {args.steps} steps: median {statistics.median(per_step) * 1e3:.1f} ms/step "
          f"(min {min(per_step) * 1e3:.1f}, max {max(per_step) * 1e3:.1f})")


if __name__ == "__main__":
    main()
