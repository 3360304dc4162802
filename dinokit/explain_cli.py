"""`dinokit explain`: flags -> `Detector.explain` -> the figures, explain.json and explain.html.
Every input error is a DinokitError raised before the forward (the main CLI prints one line)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dinokit.config import ConfigError

console = Console()


def explain(
    image: Optional[str] = typer.Argument(None, help="The image (or give --data with --image-id)."),
    checkpoint: Optional[Path] = typer.Option(None, help="A .pt checkpoint or an official DINO .pth (default: latest run's best.pt)."),
    top: Optional[int] = typer.Option(None, "--top", help="Follow the queries of the top N detections (default 3)."),
    query: Optional[int] = typer.Option(None, "--query", help="Follow this decoder query (0-based) instead."),
    layer: str = typer.Option("all", "--layer", help="Decoder layer for sampling.png (1-based) or all."),
    score: float = typer.Option(0.3, help="Detections scoring at least this go in the table."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default runs/explain/expN)."),
    data: Optional[str] = typer.Option(None, help="A dataset (any --data format) holding --image-id's ground truth."),
    image_id: Optional[str] = typer.Option(None, "--image-id", help="The image in --data: a COCO image id or a file name."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="Ground truth: a JSON list of {\"box\": (x0, y0, x1, y1) pixels, \"label\": class name}."),
    seed: int = typer.Option(0, help="Seed of the denoising noise."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Resize the longest side to this (default: the checkpoint's test-time resize)."),
    runs: str = typer.Option("runs", "--runs", help="Runs folder (latest checkpoint; default output)."),
) -> None:
    """Draw what DINO does on an image: query selection, deformable sampling, box refinement, denoising."""
    from dinokit.api import load
    from dinokit.checkpoint import latest_run_checkpoint, require_checkpoint_file
    from dinokit.explain.build import check_options
    from dinokit.explain.report import OUTPUT_FILES
    from dinokit.explain.truth import truth_from_data
    from dinokit.files import command_inputs
    from dinokit.infer.predictor import gather_inputs, input_shapes
    from dinokit.runtime.rundir import new_run_dir

    if top is not None and query is not None:
        raise ConfigError("--top and --query both choose the queries; give one")
    if (data is None) != (image_id is None):
        raise ConfigError("--data and --image-id go together (the image and its ground truth in a dataset)")
    if image_id is not None and (image is not None or boxes is not None):
        raise ConfigError("--data with --image-id names the image and its boxes: give no IMAGE or --boxes with it")
    if image is None and image_id is None:
        raise ConfigError("give an IMAGE, or --data DIR with --image-id ID")
    if image is not None:
        input_shapes(gather_inputs(image))  # a missing or unreadable image fails before the model loads
    path = checkpoint if checkpoint is not None else latest_run_checkpoint(runs)
    require_checkpoint_file(path)
    command_inputs(image, path, boxes,  # --data's files join as it is read; none may be overwritten
                   outputs={f"--out ({n})": out / n for n in OUTPUT_FILES} if out is not None else None)
    detector = load(path, device, image_size=image_size)
    check_options(3 if top is None else top, query, layer, score, detector.config)
    truth = boxes
    if image_id is not None:
        file, truth = truth_from_data(data, image_id, detector.config, detector.class_names)
        image = str(file)
    exp = detector.explain(image, top=3 if top is None else top, query=query, layer=layer, score=score, boxes=truth, seed=seed)
    folder = out if out is not None else new_run_dir(runs, "exp", command="explain")
    written = exp.save(folder)
    for note in exp.notes:
        console.print(note, highlight=False, soft_wrap=True)
    names = ", ".join(p.name for p in written.values())
    console.print(f"{exp.source}: {len(exp.detections)} detection(s) >= {score}, queries {exp.queries}; "
                  f"wrote {names} in {folder}", highlight=False, soft_wrap=True)
