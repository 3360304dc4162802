"""`Explanation`: the captured internals of one image in the original image's pixels, as arrays.

Every box is xyxy and every point (x, y) in pixels of the image as it was given (the test-time
resize undone: the model's normalised frame is the unpadded image, see capture.py), so the
numbers can be drawn on the original photo or compared with `Detector.predict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.ops import box_convert

from dinokit.config import Config, ConfigError
from dinokit.explain.capture import DenoisingInternals, Internals
from dinokit.infer.detections import Detections

@dataclass
class Explanation:
    """What DINO did on one image: query selection, cross-attention sampling, box refinement
    and (with ground truth) denoising. `arrays` holds the numbers (see `to_json` for the keys);
    `save(folder)` writes the figures, explain.json and explain.html."""

    source: str
    image: Image.Image = field(repr=False)
    class_names: list[str]
    settings: dict[str, Any]  # the switches of the model: queries, denoising, attention, lft, ...
    shapes: list[tuple[int, int]]  # (H_l, W_l) per feature level of the model's input
    detections: Detections  # the detections >= score, as `Detector.predict` gives them
    score: float
    queries: list[int]  # the decoder queries drawn (the top-N detections' queries, or the chosen one)
    chosen: bool  # True when the query was chosen (--query), False for the top-N
    layers: list[int]  # decoder layers drawn in sampling.png, 1-based
    arrays: dict[str, Any] = field(repr=False)
    notes: list[str]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the original image."""
        return self.image.height, self.image.width

    def to_json(self) -> dict[str, Any]:
        """Everything as plain JSON values (lists of numbers, pixels of the original image)."""
        from dinokit.files import json_safe

        h, w = self.size
        return json_safe({
            "source": self.source, "width": w, "height": h, "settings": self.settings,
            "levels": [list(s) for s in self.shapes], "score": self.score, "queries": self.queries,
            "chosen": self.chosen, "layers": self.layers, "notes": self.notes,
            "detections": self.detections.to_dict()["detections"], "detection_queries": self.arrays["detection_queries"],
            "classes": self.class_names, "arrays": {k: v for k, v in self.arrays.items() if k != "detection_queries"},
        })

    def figures(self) -> dict[str, Any]:
        """The matplotlib figures by name (denoising only with ground truth)."""
        from dinokit.explain.figures import make_figures

        return make_figures(self)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write the PNGs, explain.json and explain.html into `folder`; returns the paths by name."""
        from dinokit.explain.report import write_explanation

        return write_explanation(self, Path(folder))


def box_pixels(boxes: Tensor, size: tuple[int, int]) -> np.ndarray:
    """(..., 4) cxcywh normalised -> (..., 4) xyxy pixels of an image of `size` (h, w)."""
    h, w = size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=boxes.device)
    return (box_convert(boxes.detach().float(), "cxcywh", "xyxy") * scale).cpu().numpy()


def point_pixels(points: Tensor, size: tuple[int, int]) -> np.ndarray:
    """(..., 2) (x, y) normalised -> pixels of an image of `size` (h, w)."""
    h, w = size
    return (points.detach().float() * torch.tensor([w, h], dtype=torch.float32, device=points.device)).cpu().numpy()


def level_of_tokens(tokens: Tensor, shapes: list[tuple[int, int]]) -> np.ndarray:
    """The feature level of each memory token index."""
    ends = torch.tensor([h * w for h, w in shapes], device=tokens.device).cumsum(0)
    return torch.bucketize(tokens, ends, right=True).cpu().numpy()


def ranked_queries(logits: Tensor, num_select: int) -> Tensor:
    """The query of each of postprocess's top (query, class) pairs, best first: logits (Q, C)."""
    prob = logits.sigmoid().flatten()
    return prob.topk(min(num_select, prob.numel())).indices // logits.shape[-1]


def choose_queries(ranked: Tensor, total: int, top: int, query: int | None) -> list[int]:
    """The chosen query, or the first `top` distinct queries of the ranking."""
    if query is not None:
        if not 0 <= query < total:
            raise ConfigError(f"--query must be in [0, {total - 1}] (the model has {total} queries), got {query}")
        return [query]
    if top <= 0:
        raise ConfigError(f"--top must be positive, got {top}")
    return list(dict.fromkeys(int(q) for q in ranked.tolist()))[:top]


def choose_layers(layer: int | str | None, total: int) -> list[int]:
    """1-based decoder layers for sampling.png: all of them (None or 'all'), or one."""
    if layer is None or str(layer).lower() == "all":
        return list(range(1, total + 1))
    try:
        value = int(layer)
    except ValueError:
        raise ConfigError(f"--layer must be a number in [1, {total}] or 'all', got '{layer}'") from None
    if not 1 <= value <= total:
        raise ConfigError(f"--layer must be in [1, {total}] (the decoder has {total} layers) or 'all', got {value}")
    return [value]


def model_settings(cfg: Config, internals: Internals) -> dict[str, Any]:
    m = cfg.model
    return {
        "queries": m.queries, "denoising": m.denoising, "neg_target": m.neg_target, "lft": m.lft,
        "attention": m.attention, "num_queries": int(internals.anchors.shape[0]), "heads": m.nheads,
        "levels": m.num_feature_levels, "points": m.dec_points, "decoder_layers": int(internals.boxes.shape[0]),
        "input_size": list(internals.input_size),
    }


def internals_arrays(it: Internals, queries: list[int], size: tuple[int, int]) -> dict[str, Any]:
    """The numbers of `it` in pixels of an image of `size` (h, w), for the chosen queries."""
    q = torch.tensor(queries, dtype=torch.long, device=it.boxes.device)
    probs = it.logits[:, q].sigmoid()  # (layers, N, C)
    arrays: dict[str, Any] = {
        "anchors": box_pixels(it.anchors, size),  # (Q, 4) every query's input box
        "references": box_pixels(it.references[:, q].transpose(0, 1), size),  # (N, layers, 4)
        "boxes": box_pixels(it.boxes[:, q].transpose(0, 1), size),  # (N, layers, 4)
        "scores": probs.max(-1).values.transpose(0, 1).cpu().numpy(),  # (N, layers)
        "labels": probs.argmax(-1).transpose(0, 1).cpu().numpy(),  # (N, layers)
    }
    if it.objectness is not None:
        per_level = it.objectness.split([h * w for h, w in it.shapes])
        arrays["objectness"] = [o.view(h, w).cpu().numpy() for o, (h, w) in zip(per_level, it.shapes)]
        arrays["proposal_boxes"] = box_pixels(it.proposal_boxes, size)  # (K, 4), best first
        arrays["proposal_scores"] = it.proposal_scores.cpu().numpy()
        arrays["proposal_tokens"] = it.proposal_tokens.cpu().numpy()
        arrays["proposal_levels"] = level_of_tokens(it.proposal_tokens, it.shapes)
    if it.locations is not None:
        arrays["locations"] = point_pixels(it.locations[:, q].transpose(0, 1), size)  # (N, layers, M, L, P, 2)
        arrays["weights"] = it.weights[:, q].transpose(0, 1).cpu().numpy()  # (N, layers, M, L, P)
    if it.dense is not None:
        arrays["attention"] = it.dense[:, q].transpose(0, 1).cpu().numpy()  # (N, layers, S)
    return arrays


def denoising_arrays(dn: DenoisingInternals, size: tuple[int, int]) -> dict[str, Any]:
    """One denoising group in pixels: inputs, reconstructions, their scores and labels."""
    arrays: dict[str, Any] = {"dn_truth": box_pixels(dn.truth, size), "dn_truth_labels": dn.labels.cpu().numpy(),
                              "dn_groups": dn.groups}
    halves = [("positive", dn.positive_in, dn.positive_out, dn.positive_logits)]
    if dn.negative_in is not None:
        halves.append(("negative", dn.negative_in, dn.negative_out, dn.negative_logits))
    for name, noised, out, logits in halves:
        prob = logits.sigmoid()
        arrays[f"dn_{name}_in"] = box_pixels(noised, size)
        arrays[f"dn_{name}_out"] = box_pixels(out, size)
        arrays[f"dn_{name}_scores"] = prob.max(-1).values.cpu().numpy()
        arrays[f"dn_{name}_labels"] = prob.argmax(-1).cpu().numpy()
    return arrays
