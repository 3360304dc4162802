"""The model's own internals on one image, read with forward hooks on its real modules.

Nothing here recomputes what the model does: the hooks keep the tensors the modules were called
with or returned during the one forward that also gives the detections.

- query selection (`model.queries`): the selected tokens, their proposals and anchors, and the
  encoder's class logits of every memory token (the first call of `enc_class_head`);
- every decoder layer's cross-attention: the reference boxes it was called with, and either the
  deformable sampling locations and weights (its `sampling` step) or, for dense attention, the
  weights `nn.MultiheadAttention` returns when asked for them (a pre-hook sets need_weights);
- denoising: a second forward with ground-truth targets, which builds the contrastive groups.

One image goes through unpadded, so the model's normalised frame ([0, 1] of the unpadded image)
is the original image's frame: x * width, y * height gives original pixels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from dinokit.model.attention import MultiScaleDeformableAttention


@dataclass
class Internals:
    """What the figures draw, for one image, as the model computed it. Boxes are cxcywh and
    points (x, y), normalised to the image; Q decoder queries, C classes, S memory tokens."""

    shapes: list[tuple[int, int]]  # (H_l, W_l) per feature level, finest first
    input_size: tuple[int, int]  # (h, w) the model saw (after the test-time resize)
    logits: Tensor  # (layers, Q, C) class logits of every decoder layer
    boxes: Tensor  # (layers, Q, 4) the box every layer predicted
    references: Tensor  # (layers, Q, 4) the reference box each layer's cross-attention used
    anchors: Tensor  # (Q, 4) the decoder's input boxes (selected proposals or learned anchors)
    objectness: Tensor | None  # (S,) encoder score per token (max class sigmoid); None: static queries
    proposal_tokens: Tensor | None  # (K,) selected memory tokens, best first
    proposal_boxes: Tensor | None  # (K, 4) their proposals (the two-stage boxes)
    proposal_scores: Tensor | None  # (K,) their max class sigmoid
    locations: Tensor | None  # (layers, Q, M, L, P, 2) deformable sampling points
    weights: Tensor | None  # (layers, Q, M, L, P) their attention weights, summing to 1 per head
    dense: Tensor | None  # (layers, Q, S) dense attention weights, averaged over the heads
    outputs: dict[str, Any]  # the model's own output dict


@dataclass
class DenoisingInternals:
    """One contrastive-denoising group (draw 0, group 0) of the ground truth, G boxes."""

    truth: Tensor  # (G, 4) ground truth cxcywh
    labels: Tensor  # (G,) class index
    positive_in: Tensor  # (G, 4) noised positive queries' boxes
    positive_out: Tensor  # (G, 4) what the last decoder layer made of them
    positive_logits: Tensor  # (G, C)
    negative_in: Tensor | None  # (G, 4); None for plain DN (positives only)
    negative_out: Tensor | None
    negative_logits: Tensor | None
    groups: int  # groups per draw the model built for this many boxes


def single_batch(pixels: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """(1, 3, h, w) image and its (1, h, w) all-False mask: one unpadded image."""
    images = pixels[None].to(device)
    return images, torch.zeros(1, *images.shape[-2:], dtype=torch.bool, device=device)


@contextlib.contextmanager
def _hooks(model: nn.Module) -> Iterator[dict[str, list[Any]]]:
    """Hooks on query selection and every decoder cross-attention; removed on exit."""
    seen: dict[str, list[Any]] = {"class_head": [], "selected": [], "references": [], "sampling": [], "dense": []}
    handles = []

    def keep(key: str, pick: Any) -> Any:
        return lambda module, args, out: seen[key].append(pick(args, out))

    queries = model.queries
    if hasattr(queries, "enc_class_head"):
        handles.append(queries.enc_class_head.register_forward_hook(keep("class_head", lambda a, o: o)))
    handles.append(queries.register_forward_hook(keep("selected", lambda a, o: (a[2], o))))  # (shapes, selection)
    for layer in model.decoder.layers:
        attn = layer.cross_attn
        handles.append(attn.register_forward_pre_hook(lambda m, args: seen["references"].append(args[1])))
        if isinstance(attn, MultiScaleDeformableAttention):
            handles.append(attn.sampling.register_forward_hook(keep("sampling", lambda a, o: (a[2], a[3]))))
        else:  # DenseAttention: its nn.MultiheadAttention returns per-head weights when asked
            handles.append(attn.attn.register_forward_pre_hook(_ask_for_weights, with_kwargs=True))
            handles.append(attn.attn.register_forward_hook(keep("dense", lambda a, o: o[1].mean(1))))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _ask_for_weights(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """nn.MultiheadAttention computes the same output and also returns its (B, H, Q, S) weights."""
    return args, {**kwargs, "need_weights": True, "average_attn_weights": False}


def capture(model: nn.Module, pixels: Tensor, device: torch.device) -> Internals:
    """Run the detector once on `pixels` (3, h, w) in [0, 1] (already resized as at test time)
    and keep its internals; the model must be in eval mode (inference: K matching queries only)."""
    images, masks = single_batch(pixels, device)
    with _hooks(model) as seen, torch.inference_mode():
        out = model(images, masks)
    level_shapes, selected = seen["selected"][0]
    shapes = [(int(h), int(w)) for h, w in level_shapes]
    logits = torch.stack([a["pred_logits"] for a in out["aux_outputs"]] + [out["pred_logits"]])[:, 0].float()
    boxes = torch.stack([a["pred_boxes"] for a in out["aux_outputs"]] + [out["pred_boxes"]])[:, 0].float()
    references = torch.stack([r[0, :, 0] for r in seen["references"]]).float()  # level 0: no padding, ratio 1
    objectness = tokens = proposal_boxes = proposal_scores = None
    if selected.enc_outputs is not None:
        objectness = seen["class_head"][0][0].float().sigmoid().max(-1).values  # (S,)
        tokens = selected.indices[0]
        proposal_boxes = selected.enc_outputs["pred_boxes"][0].float()
        proposal_scores = selected.enc_outputs["pred_logits"][0].float().sigmoid().max(-1).values
    locations = weights = dense = None
    if seen["sampling"]:
        locations = torch.stack([loc[0] for loc, _ in seen["sampling"]]).float()
        weights = torch.stack([w[0] for _, w in seen["sampling"]]).float()
    if seen["dense"]:
        dense = torch.stack([w[0] for w in seen["dense"]]).float()
    return Internals(
        shapes=shapes, input_size=(int(images.shape[-2]), int(images.shape[-1])), logits=logits, boxes=boxes,
        references=references, anchors=selected.anchors[0].detach().float().sigmoid(), objectness=objectness,
        proposal_tokens=tokens, proposal_boxes=proposal_boxes, proposal_scores=proposal_scores,
        locations=locations, weights=weights, dense=dense, outputs=out,
    )


@contextlib.contextmanager
def _denoising_mode(model: nn.Module) -> Iterator[None]:
    """DINO builds its denoising groups when the module itself is in training mode and targets
    are given. Only the top module's flag is set: every layer (BatchNorm, dropout, query
    selection) stays in eval mode, so the matching queries are those of inference."""
    model.training = True
    try:
        yield
    finally:
        model.training = False


def capture_denoising(
    model: nn.Module, pixels: Tensor, device: torch.device, truth: Tensor, labels: Tensor, seed: int = 0
) -> DenoisingInternals | None:
    """The model's denoising forward on `pixels` (3, h, w) with ground truth `truth` (G, 4) cxcywh
    normalised and `labels` (G,); the noise is drawn from `seed` (the global RNG is left as it
    was). None when the model has no denoising queries or there is no box."""
    if getattr(model, "denoising", None) is None or len(labels) == 0:
        return None
    images, masks = single_batch(pixels, device)
    targets = [{"boxes": truth.to(device).float(), "labels": labels.to(device).long()}]
    accelerators = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=accelerators), _denoising_mode(model), torch.inference_mode():
        torch.manual_seed(seed)
        out = model(images, masks, targets)
    dn = out["dn"]
    q = dn.queries
    G = q.max_gt  # one image: every slot of a half is a real box
    pos, neg = slice(0, G), slice(G, 2 * G)  # draw 0, group 0: positive half, then negative half
    contrastive = bool(q.negative[0, neg].all()) if q.negative.shape[1] >= 2 * G else False
    last_boxes, last_logits = dn.boxes[-1, 0].float(), dn.logits[-1, 0].float()  # (P, 4), (P, C)
    return DenoisingInternals(
        truth=q.boxes[0, pos].float(), labels=q.labels[0, pos], positive_in=q.noised[0, pos].float(),
        positive_out=last_boxes[pos], positive_logits=last_logits[pos],
        negative_in=q.noised[0, neg].float() if contrastive else None,
        negative_out=last_boxes[neg] if contrastive else None,
        negative_logits=last_logits[neg] if contrastive else None, groups=q.groups,
    )
