"""The gallery: the same validation images through every arm, side by side.

One row per image, one column per arm, the ground truth in the first column. The images are the
validation images with the most objects (ties: the lower image id), so they are fixed by the
dataset, not by any arm. Every arm's column is the best checkpoint of one seed (the first seed
that every arm finished; the trials' resume state `last.pt` is deleted after training).
Beside it, `selection.png` shows each arm's query selection on the busiest image (dinokit explain's
figure, from each arm's own forward): does static versus mixed change the anchors?
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from PIL import Image, ImageDraw

from dinokit.files import write_with

ROWS = 6
CELL = 256  # pixels per image side in the gallery
SCORE = 0.3
HEADER = 28


def busiest_images(gt: dict[str, Any], k: int = ROWS) -> list[int]:
    """Ids of the `k` images with the most (non-crowd) objects; ties go to the lower id."""
    counts = {int(im["id"]): 0 for im in gt.get("images", [])}
    for ann in gt.get("annotations", []):
        if not ann.get("iscrowd", 0) and int(ann["image_id"]) in counts:
            counts[int(ann["image_id"])] += 1
    return sorted(counts, key=lambda i: (-counts[i], i))[:k]


def gallery_seed(done: pd.DataFrame, arms: list[str]) -> int | None:
    """The first seed whose trials of every arm finished with a best checkpoint on disk."""
    for seed in sorted(done["seed"].unique()) if len(done) else []:
        rows = done[done["seed"] == seed]
        dirs = {r.arm: Path(str(r.run_dir)) / "best.pt" for r in rows.itertuples() if str(r.run_dir)}
        if all(a in dirs and dirs[a].is_file() for a in arms):
            return int(seed)
    return None


def _cell(image: Image.Image) -> Image.Image:
    """Fit `image` (already drawn) into a CELL x CELL square, keeping its aspect ratio."""
    scale = CELL / max(image.width, image.height)
    small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    cell = Image.new("RGB", (CELL, CELL), "white")
    cell.paste(small, ((CELL - small.width) // 2, (CELL - small.height) // 2))
    return cell


def make_selection_sheet(checkpoints: dict[str, Path], image: Path, path: Path, device: str = "cpu") -> Path:
    """Each arm's `dinokit explain` selection figure of `image`, one row per arm, in `path`."""
    import tempfile

    from dinokit.explain.build import write_selection

    panels = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        for arm, ckpt in checkpoints.items():
            figure = write_selection(ckpt, image, Path(tmp) / "selection.png", device=device)
            with Image.open(figure) as img:
                panel = img.convert("RGB")
            titled = Image.new("RGB", (panel.width, panel.height + HEADER), "white")
            titled.paste(panel, (0, HEADER))
            ImageDraw.Draw(titled).text((6, 8), arm[:60], fill="black")
            panels.append(titled)
    # one row per arm: the figures differ in width (static queries have no per-level maps), and a
    # strip of six side by side is too wide to read
    sheet = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels)), "white")
    y = 0
    for panel in panels:
        sheet.paste(panel, (0, y))
        y += panel.height
    return write_with(path, lambda tmp: sheet.save(tmp, format="PNG"))


def make_gallery(done: pd.DataFrame, arms: list[str], path: Path, device: str = "cpu") -> Path | None:
    """Write `path` (gallery.png) from the completed trials (`done`: arm, seed, run_dir); None
    when no seed has every arm's checkpoint (e.g. a report rebuilt on another machine)."""
    import dinokit
    from dinokit.data.coco import build_dataset, resolve_source
    from dinokit.infer.detections import read_image
    from dinokit.infer.draw import draw_detections

    seed = gallery_seed(done, arms)
    if seed is None:
        return None
    runs = {r.arm: Path(str(r.run_dir)) / "best.pt" for r in done[done["seed"] == seed].itertuples()}
    detectors = {a: dinokit.load(runs[a], device=device) for a in arms}
    cfg = detectors[arms[0]].config
    dataset = build_dataset(resolve_source(cfg.data), cfg.data, "val", train=False)
    ids = busiest_images(dataset.coco.dataset, ROWS)
    path_of = dict(zip(dataset.ids, dataset.image_paths()))
    files = [path_of[i] for i in ids]
    name_of = {c: n for n, c in zip(dataset.class_names, dataset.cat_ids)}
    columns: list[list[Image.Image]] = []
    truth = []
    for image_id, file in zip(ids, files):
        anns = [a for a in dataset.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32, device="cpu").reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)  # (N, 4) xyxy pixels
        labels = [dataset.cat_ids.index(a["category_id"]) for a in anns]
        texts = [name_of.get(a["category_id"], "?") for a in anns]
        truth.append(_cell(draw_detections(read_image(Path(file)), boxes, labels, texts)))  # read, then closed
    columns.append(truth)
    for arm in arms:
        found = detectors[arm].predict(files, score=SCORE)
        columns.append([_cell(d.plot()) for d in found])
    make_selection_sheet({a: runs[a] for a in arms}, Path(files[0]), path.with_name("selection.png"), device)
    titles = ["ground truth", *(f"{a} (seed {seed})" for a in arms)]
    sheet = Image.new("RGB", (CELL * len(columns), HEADER + CELL * len(ids)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (title, cells) in enumerate(zip(titles, columns)):
        draw.text((c * CELL + 6, 8), title[:40], fill="black")
        for r, cell in enumerate(cells):
            sheet.paste(cell, (c * CELL, HEADER + r * CELL))
    return write_with(path, lambda tmp: sheet.save(tmp, format="PNG"))
