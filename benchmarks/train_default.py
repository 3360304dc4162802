"""What `dinokit train` with no arguments reaches, and how long it takes (run by hand).

    python benchmarks/train_default.py [--set key=value ...] [--json out.json]

Trains the `tiny` preset on the built-in shapes data exactly as the bare command does (in a
scratch `runs` folder), then prints wall time, steps and the best AP / AP50 on shapes val.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from dinokit.config import apply_overrides, load_preset
from dinokit.train.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cfg = apply_overrides(load_preset("tiny"), args.overrides)
    with tempfile.TemporaryDirectory() as out:
        cfg.train.out = out
        start = time.perf_counter()
        result = train(cfg, progress=False)
        wall = time.perf_counter() - start
    row = {
        "wall_seconds": round(wall, 1),
        "steps": result.steps,
        "threads": torch.get_num_threads(),
        "best_AP": result.best.get("AP"),
        "best_AP50": result.best.get("AP50"),
        "history": [{k: h.get(k) for k in ("epoch", "step", "AP", "AP50", "elapsed")} for h in result.history],
        "overrides": args.overrides,
    }
    print(json.dumps(row, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)


if __name__ == "__main__":
    main()
