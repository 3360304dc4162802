"""What sliced inference (`--slice`) gains on objects that are small against the image, and what
it costs: AP, APs and prediction time, whole image against tiles, on canvases made of the built-in
shapes images (GRID x GRID of them side by side: every object keeps its size in pixels while the
image grows GRID times, so the whole-image resize shrinks it GRID times). Benchmark data only: the
default data is not changed.

    python benchmarks/slice_small.py CHECKPOINT [--canvases 20] [--grid 4] [--tiles 128,256]
        [--overlap 0.2] [--merges nms/iou,fusion/ios] [--threads 2] [--repeats 3] [--json FILE]

CHECKPOINT: a detector trained on the shapes data at its default 128 px (e.g. `dinokit train
--steps 400`); the tiles then show it objects at the scale it learned. Times are the median of
`--repeats` predictions of all canvases, whole and sliced interleaved in one process; run it on
a quiet machine (see TIMING.md) and read the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import dinokit
from dinokit.data.shapes import write_shapes
from dinokit.files import write_json
from dinokit.infer.slice import Slicing


def write_canvases(out: Path, canvases: int, grid: int, size: int, seed: int) -> Path:
    """A COCO folder (annotations/instances_{train,val}.json, val/*.png) of `canvases` images, each
    grid x grid shapes images of `size` px from a shapes set drawn with `seed` (not the training
    seed), their boxes moved with them."""
    shapes = write_shapes(out / "shapes", 1, canvases * grid * grid, size, seed)
    coco = json.loads((shapes / "annotations" / "instances_val.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    (out / "val").mkdir(parents=True)
    images, annotations = [], []
    tiles = iter(coco["images"])
    for c in range(canvases):
        canvas = Image.new("RGB", (grid * size, grid * size))
        for row in range(grid):
            for col in range(grid):
                record = next(tiles)
                with Image.open(shapes / "val" / record["file_name"]) as tile:
                    canvas.paste(tile.convert("RGB"), (col * size, row * size))
                for ann in by_image.get(record["id"], []):
                    x, y, w, h = ann["bbox"]
                    annotations.append({**ann, "id": len(annotations) + 1, "image_id": c + 1,
                                        "bbox": [x + col * size, y + row * size, w, h]})
        name = f"canvas{c + 1:03d}.png"
        canvas.save(out / "val" / name)
        images.append({"id": c + 1, "file_name": name, "width": grid * size, "height": grid * size})
    (out / "annotations").mkdir()
    split = {"images": images, "annotations": annotations, "categories": coco["categories"]}
    for name in ("train", "val"):  # a COCO folder needs both; only val is evaluated
        (out / "annotations" / f"instances_{name}.json").write_text(json.dumps(split))
    return out


def timed(run, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--canvases", type=int, default=20)
    parser.add_argument("--grid", type=int, default=4, help="shapes images per canvas side")
    parser.add_argument("--size", type=int, default=128, help="side of each shapes image")
    parser.add_argument("--seed", type=int, default=1, help="shapes seed of the canvases (training used 0)")
    parser.add_argument("--tiles", default="128,256", help="tile sides to try, comma-separated")
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--merges", default="nms/iou,nms/ios,fusion/iou,fusion/ios",
                        help="merge/metric pairs to try; the first (the default) is timed")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    detector = dinokit.load(args.checkpoint, "cpu")
    tiles = [int(t) for t in args.tiles.split(",")]
    merges = [tuple(m.split("/")) for m in args.merges.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_canvases(Path(tmp) / "canvases", args.canvases, args.grid, args.size, args.seed)
        side = args.grid * args.size
        print(f"{args.canvases} canvases of {side} px ({args.grid}x{args.grid} shapes images of {args.size} px); "
              f"model input {detector.config.data.image_size} px; {args.checkpoint}", flush=True)

        def report(name: str, metrics: dict, **extra) -> None:
            row = {"mode": name, **{k: metrics[k] for k in ("AP", "AP50", "APs", "APm", "APl")}, **extra}
            rows.append(row)
            cells = "  ".join(f"{k} {100 * v:5.1f}" if v == v else f"{k}   n/a" for k, v in row.items()
                              if k in ("AP", "AP50", "APs", "APm"))
            print(f"{name:28s} {cells}" + "".join(f"  {k} {v}" for k, v in extra.items()), flush=True)

        report("whole canvas", detector.evaluate(data=str(data), batch_size=args.batch_size))
        for tile in tiles:
            for merge, metric in merges:
                slicing = Slicing(tile, args.overlap, merge, metric)
                metrics = detector.evaluate(data=str(data), batch_size=args.batch_size, slice=slicing)
                report(f"tiles {tile} ({merge}/{metric})", metrics, tile=tile, merge=f"{merge}/{metric}")

        # Time: predict every canvas whole and sliced (the first merge), interleaved.
        files = sorted(str(p) for p in (data / "val").glob("*.png"))
        images = [Image.open(f).convert("RGB") for f in files]
        modes = {"whole": None, **{f"tiles {t}": Slicing(t, args.overlap, *merges[0]) for t in tiles}}
        times: dict[str, list[float]] = {m: [] for m in modes}
        for mode, slicing in modes.items():  # warm-up
            detector.predict(images[:1], score=0.3, batch_size=args.batch_size, slice=slicing)
        for _ in range(args.repeats):
            for mode, slicing in modes.items():
                times[mode] += timed(lambda s=slicing: detector.predict(images, 0.3, args.batch_size, slice=s), 1)
        whole = statistics.median(times["whole"])
        timing = {}
        for mode, slicing in modes.items():
            count = 1 if slicing is None else len(_tile_starts(side, slicing)) ** 2
            median = statistics.median(times[mode])
            timing[mode] = {"tiles_per_image": count, "seconds_per_image": median / len(images),
                            "ratio_to_whole": median / whole}
            print(f"time {mode:10s} {count:3d} tile(s)/image  {1000 * median / len(images):8.1f} ms/image  "
                  f"x{median / whole:.1f} of whole", flush=True)
    if args.json:
        write_json(args.json, {"checkpoint": args.checkpoint, "canvases": args.canvases, "grid": args.grid,
                               "size": args.size, "overlap": args.overlap, "threads": args.threads,
                               "accuracy": rows, "timing": timing})


def _tile_starts(side: int, slicing: Slicing) -> list[int]:
    """Where tiles start along one side (as supervision's InferenceSlicer places them)."""
    if side <= slicing.tile:
        return [0]
    stride = slicing.tile - slicing.overlap_pixels
    starts = list(np.arange(0, side - slicing.tile, stride))
    return starts + [side - slicing.tile]


if __name__ == "__main__":
    main()
