"""How much of a paired difference's spread is validation-sample noise?

Evaluates two checkpoints (two arms of one seed) once on the built-in validation split of
`--val` images, then resamples the images with replacement (`--boot` times) and recomputes
each checkpoint's AP and their difference on the same resample. The bootstrap sd of the
difference is the part of a study's paired spread that comes from which images were drawn for
validation, not from training; it is printed for the first 100 images (the default split) and
for all `--val` images (the studies' larger split).

    python benchmarks/val_noise.py runs/train/a/best.pt runs/train/b/best.pt --val 300 --boot 200
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np


def _detections(ckpt: str, val: int) -> tuple[list[dict], dict]:
    import dinokit
    from dinokit.data.coco import build_dataset, resolve_source

    det = dinokit.load(ckpt, device="cpu")
    det.config.data.shapes_val = val
    with tempfile.TemporaryDirectory() as tmp:
        det.evaluate(detections=Path(tmp) / "d.json")
        dets = json.loads((Path(tmp) / "d.json").read_text())
    gt = build_dataset(resolve_source(det.config.data), det.config.data, "val", train=False).coco.dataset
    return dets, gt


def _ap(gt: dict, dets: list[dict], ids: np.ndarray) -> float:
    """COCO AP on the images `ids` (repeats allowed: each copy gets its own image id)."""
    from pycocotools.coco import COCO

    from dinokit.infer.evaluator import evaluate_detections

    by_img: dict[int, list] = {}
    for a in gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    dets_by: dict[int, list] = {}
    for d in dets:
        dets_by.setdefault(d["image_id"], []).append(d)
    images, anns, out = [], [], []
    for new, old in enumerate(ids.tolist(), start=1):
        images.append({"id": new, "width": 128, "height": 128})
        anns += [{**a, "id": len(anns) + k + 1, "image_id": new} for k, a in enumerate(by_img.get(old, []))]
        out += [{**d, "image_id": new} for d in dets_by.get(old, [])]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": gt["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return float(evaluate_detections(coco, out)["AP"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--val", type=int, default=300)
    p.add_argument("--boot", type=int, default=200)
    args = p.parse_args()
    (da, gt), (db, _) = _detections(args.a, args.val), _detections(args.b, args.val)
    all_ids = np.array(sorted(im["id"] for im in gt["images"]))
    rng = np.random.default_rng(0)
    for n in (100, len(all_ids)):
        ids = all_ids[:n]
        a0, b0 = _ap(gt, da, ids), _ap(gt, db, ids)
        boots = [(lambda s: (_ap(gt, da, s), _ap(gt, db, s)))(rng.choice(ids, n)) for _ in range(args.boot)]
        arr = 100 * np.array(boots)
        print(f"{n} val images: AP a {100 * a0:.2f}, b {100 * b0:.2f}, diff {100 * (a0 - b0):+.2f}; bootstrap sd "
              f"a {arr[:, 0].std(ddof=1):.2f}, b {arr[:, 1].std(ddof=1):.2f}, "
              f"paired diff {(arr[:, 0] - arr[:, 1]).std(ddof=1):.2f} AP ({args.boot} resamples)")


if __name__ == "__main__":
    main()
