"""One image -> `Explanation`: the test-time resize, the captured forward, the detections and
the chosen queries, all in the original image's pixels; and `write_selection`, the one call the
ablation studio's gallery makes for each arm's selection.png."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.ops import box_convert

from dinokit.config import ConfigError
from dinokit.errors import CheckpointError
from dinokit.explain.capture import capture, capture_denoising
from dinokit.explain.explanation import (
    Explanation, choose_layers, choose_queries, denoising_arrays, internals_arrays, model_settings, ranked_queries,
)
from dinokit.explain.truth import Truth


def check_options(top: int, query: int | None, layer: int | str | None, score: float, cfg: Any) -> None:
    """The options that need only the configuration, checked before any forward."""
    if not 0.0 <= score <= 1.0:
        raise ConfigError(f"--score must be in [0, 1], got {score}")
    if query is None and top <= 0:
        raise ConfigError(f"--top must be positive, got {top}")
    if query is not None and not 0 <= query < cfg.model.num_queries:
        raise ConfigError(f"--query must be in [0, {cfg.model.num_queries - 1}] (the model has "
                          f"{cfg.model.num_queries} queries), got {query}")
    choose_layers(layer, cfg.model.dec_layers)


def explain_image(
    backend: Any, image: Image.Image, source: str, transform: Any, device: torch.device, *, score: float = 0.3,
    top: int = 3, query: int | None = None, layer: int | str | None = None, truth: Truth | None = None,
    seed: int = 0, autocast: Any = None,
) -> Explanation:
    """Run the detector of `backend` (dinokit.infer.predictor.Backend) on `image` once, with hooks,
    and gather what each figure draws; `truth` adds one denoising group (noise drawn from `seed`)."""
    from dinokit.infer.predictor import _detections, _prepare
    from dinokit.model.postprocess import postprocess

    model, cfg = backend.model, backend.cfg
    if model is None:
        raise CheckpointError(f"explain needs a torch checkpoint (.pt / .pth), not an exported ({backend.kind}) model")
    model = getattr(model, "_orig_mod", model)  # torch.compile'd: hooks on the eager modules
    check_options(top, query, layer, score, cfg)
    size = (image.height, image.width)
    pixels, _ = _prepare(image, transform)  # (3, h', w') the test-time resize, as predict
    with autocast if autocast is not None else contextlib.nullcontext():
        internals = capture(model, pixels, device)
        dn = None
        if truth is not None and len(truth.labels):
            h, w = size
            xyxy = (torch.as_tensor(truth.boxes, dtype=torch.float32) / torch.tensor([w, h, w, h])).clamp(0, 1)
            cxcywh = box_convert(xyxy, "xyxy", "cxcywh")  # (G, 4) normalised, as the model's targets
            dn = capture_denoising(model, pixels, device, cxcywh, torch.as_tensor(truth.labels), seed)
    det = postprocess(internals.outputs, torch.tensor([size], device=device), cfg.model.num_select)[0]
    detections = _detections(det, source, size, backend, score, image)
    ranked = ranked_queries(internals.logits[-1], cfg.model.num_select)
    queries = choose_queries(ranked, internals.anchors.shape[0], top, query)
    arrays = internals_arrays(internals, queries, size)
    arrays["detection_queries"] = ranked[: len(detections)].cpu().numpy()
    settings = model_settings(cfg, internals)
    notes = _notes(settings, len(detections), score, queries, query is not None, truth, dn is not None)
    if dn is not None:
        arrays.update(denoising_arrays(dn, size))
    return Explanation(
        source=source, image=image, class_names=list(backend.classes), settings=settings, shapes=internals.shapes,
        detections=detections, score=score, queries=queries, chosen=query is not None,
        layers=choose_layers(layer, settings["decoder_layers"]), arrays=arrays, notes=notes,
    )


def _notes(settings: dict[str, Any], found: int, score: float, queries: list[int], chosen: bool,
           truth: Truth | None, denoised: bool) -> list[str]:
    """What the reader should know about this explanation, one sentence each."""
    notes = []
    if found == 0:
        notes.append(f"No detection scored {score} or more: the figures show the top {len(queries)} "
                     "queries by score anyway.")
    elif not chosen:
        notes.append(f"{found} detection(s) scored {score} or more; the figures follow the queries of "
                     f"the top {len(queries)}.")
    if settings["queries"] == "static":
        notes.append("Static queries: no query selection; the anchors are learned embeddings, the same "
                     "for every image.")
    if truth is None:
        notes.append("denoising.png needs ground truth: --data DIR with --image-id ID, or --boxes FILE.json.")
    elif settings["denoising"] == "none":
        notes.append("This model was trained without denoising queries (denoising none): no denoising.png.")
    elif not denoised:
        notes.append("The ground truth has no box: no denoising group to draw.")
    return notes


def explain_source(
    backend: Any, source: Any, transform: Any, device: torch.device, *, boxes: Any = None, **options: Any
) -> Explanation:
    """`explain_image` for one image given as `Detector.predict` takes it (path, PIL, NumPy,
    tensor); `boxes` is ground truth: a JSON file, a list of {"box": [x0, y0, x1, y1], "label"},
    or a `Truth`."""
    from dinokit.errors import DataError
    from dinokit.explain.truth import truth_from_json, truth_from_records
    from dinokit.infer.detections import read_image
    from dinokit.infer.predictor import gather_inputs

    inputs = gather_inputs(source)
    if len(inputs) != 1:
        raise DataError(f"explain takes one image, got {len(inputs)} ({inputs[0][0]}, ...)")
    name, item = inputs[0]
    image = read_image(item) if not isinstance(item, Image.Image) else item
    truth = boxes
    if isinstance(boxes, (str, Path)):
        truth = truth_from_json(boxes, list(backend.classes), Path(name).name)
    elif isinstance(boxes, list):
        truth = truth_from_records(boxes, list(backend.classes), "boxes")
    return explain_image(backend, image, name, transform, device, truth=truth, **options)


def write_selection(checkpoint: str | Path, image: str | Path, path: str | Path, device: str = "cpu") -> Path:
    """Load `checkpoint`, explain `image` and write only its selection.png to `path` (for the
    ablation report's gallery: each arm's anchors side by side). Returns `path`."""
    from dinokit.data.transforms import eval_transforms
    from dinokit.explain.figures import selection_figure
    from dinokit.explain.report import save_figure
    from dinokit.infer.detections import read_image
    from dinokit.infer.predictor import load_backend

    backend = load_backend(checkpoint, "torch", torch.device(device))
    exp = explain_image(backend, read_image(Path(image)), str(image), eval_transforms(backend.cfg.data),
                        torch.device(device))
    return save_figure(selection_figure(exp), Path(path))
