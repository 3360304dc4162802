"""Time to accuracy of a training recipe: the AP curve over optimiser steps and training seconds.

    python benchmarks/train_default.py --out runs/bench/default                     # the tiny preset
    python benchmarks/train_default.py --out runs/bench/groups --set model.query_groups=3 \\
        --against runs/bench/default/curve.csv                                       # overlay a curve
    python benchmarks/train_default.py --out runs/bench/cmp --against recipe.yaml   # train both
    python benchmarks/train_default.py --out runs/bench/compiled --compile true \
        --against runs/bench/default/curve.csv                                       # compiled vs eager

Trains on the built-in shapes data (unchanged: same generator, split and COCO evaluation) with an
evaluation every `--eval-every` steps, writes curve.csv (step, seconds, AP, AP50; AP as fractions,
seconds = training time without evaluation) and curve.png into --out, and prints the first step
and second at which AP50 reached 0.3, 0.5, 0.6 and 0.7. `--against` overlays a second recipe:
an earlier curve.csv, or a YAML config (trained here with the same budget). Run by hand; the
seconds depend on the host (benchmarks/speed.py measures its matmul rate).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import torch

from dinokit.config import Config, apply_overrides, load_preset, load_yaml
from dinokit.files import atomic_open, write_with
from dinokit.training.trainer import train

THRESHOLDS = (0.3, 0.5, 0.6, 0.7)
COLUMNS = ("step", "seconds", "AP", "AP50")


def run_curve(cfg: Config) -> list[dict[str, float]]:
    """Train `cfg` in a scratch runs folder; one row per evaluation."""
    with tempfile.TemporaryDirectory() as out:
        cfg.train.out = out
        result = train(cfg, progress=False)
    return [{"step": int(h["step"]), "seconds": float(h["train_seconds"]), "AP": float(h["AP"]),
             "AP50": float(h["AP50"])} for h in result.history]


def first_reached(curve: list[dict[str, float]]) -> dict[float, tuple[int, float] | None]:
    """The first (step, seconds) at which AP50 reached each threshold (None: never)."""
    return {th: next(((r["step"], r["seconds"]) for r in curve if r["AP50"] >= th), None) for th in THRESHOLDS}


def write_csv(curve: list[dict[str, float]], path: Path) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(curve)


def read_csv(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if k in COLUMNS} for row in csv.DictReader(f)]


def plot(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, curve in curves.items():
        for ax, x in zip(axes, ("step", "seconds")):
            ax.plot([r[x] for r in curve], [r["AP50"] for r in curve], marker="o", label=label)
    for ax, x in zip(axes, ("optimiser steps", "training seconds")):
        ax.set_xlabel(x)
        ax.set_ylabel("AP50 (shapes val)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def recipe(preset: str, config: str | None, overrides: list[str], steps: int, every: int,
           compile_: str | None = None) -> Config:
    """The preset, a YAML on top, the overrides, then the benchmark's budget (and `--compile`)."""
    cfg = load_preset(preset)
    if config:
        cfg = load_yaml(Path(config), cfg)
    cfg = apply_overrides(cfg, overrides + ([f"train.compile={compile_}"] if compile_ else []))
    cfg.train.steps, cfg.train.time_budget, cfg.train.eval_every_steps = steps, 0.0, every
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for curve.csv and curve.png")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--config", default=None, help="YAML config on top of the preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps (the lr drops after 11/12)")
    parser.add_argument("--eval-every", type=int, default=50, help="evaluate every N steps")
    parser.add_argument("--against", default=None, help="a curve.csv to overlay, or a YAML config to train too")
    parser.add_argument("--label", default="recipe")
    parser.add_argument("--compile", choices=("auto", "true", "false"), default=None,
                        help="train.compile for every recipe trained here (seconds include compiling)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = {args.label: run_curve(recipe(args.preset, args.config, args.overrides, args.steps, args.eval_every,
                                                   args.compile))}
    write_csv(curves[args.label], out / "curve.csv")
    if args.against:
        against = Path(args.against)
        if against.suffix == ".csv":
            curves[f"against: {against.parent.name}"] = read_csv(against)
        else:
            curves[f"against: {against.stem}"] = run_curve(recipe(args.preset, str(against), [], args.steps,
                                                                  args.eval_every, args.compile))
            write_csv(curves[f"against: {against.stem}"], out / "curve_against.csv")
    plot(curves, out / "curve.png")
    report = {"threads": torch.get_num_threads(), "steps": args.steps, "overrides": args.overrides,
              "compile": args.compile}
    for label, curve in curves.items():
        reached = first_reached(curve)
        report[label] = {f"AP50>={th}": (f"step {r[0]:.0f}, {r[1]:.0f} s" if r else "not reached")
                         for th, r in reached.items()}
        report[label]["final AP50"] = curve[-1]["AP50"] if curve else None
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
