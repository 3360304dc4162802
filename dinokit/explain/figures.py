"""The four figures of an `Explanation`, drawn on the original image with matplotlib (Agg
canvases, no pyplot state). Every coordinate is already in the image's pixels."""

from __future__ import annotations

from typing import Any

import numpy as np

# dinokit.explain.explanation.Explanation, by name only: Explanation.figures() calls this module,
# so importing it back (even for type checking) would make the two modules import each other
Explanation = Any

PANEL = 3.6  # inches per panel side
PROPOSALS_DRAWN = 20  # the best proposals drawn in selection.png (all K would hide the image)
LEVEL_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4")
QUERY_NOTES = {
    "mixed": "mixed query selection: each query's anchor box is one of the encoder's top-K proposals; "
             "its content query is learned (the same for every image)",
    "pure": "pure query selection (two-stage): anchor box and content query both come from the encoder's "
            "top-K tokens",
    "static": "static queries: learned anchor boxes and content, the same for every image (no selection)",
}


def _figure(cols: int, rows: int, width: float = PANEL) -> tuple[Any, np.ndarray]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, width * rows * 0.75 + 0.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.array(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def _show(ax: Any, exp: Explanation, title: str, dim: float = 1.0) -> None:
    h, w = exp.size
    ax.imshow(np.asarray(exp.image), extent=(0, w, h, 0), alpha=dim)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _box(ax: Any, box: Any, colour: str, width: float = 1.5, style: str = "-", alpha: float = 1.0,
         label: str | None = None) -> None:
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=width,
                           linestyle=style, alpha=alpha, label=label))


def _query_title(exp: Explanation, i: int, layer: int) -> str:
    """'query 17: raccoon 0.83' with the layer's class and score."""
    label = int(exp.arrays["labels"][i, layer])
    name = exp.class_names[label] if 0 <= label < len(exp.class_names) else str(label)
    return f"query {exp.queries[i]}: {name} {float(exp.arrays['scores'][i, layer]):.2f}"


def selection_figure(exp: Explanation) -> Any:
    """Encoder objectness per level with the selected tokens, and the best proposals by rank;
    static queries: the learned anchors, the drawn queries' anchors highlighted."""
    from matplotlib import colormaps

    a = exp.arrays
    if "objectness" not in a:
        fig, axes = _figure(1, 1, 5.0)
        ax = axes[0, 0]
        _show(ax, exp, f"{len(a['anchors'])} learned anchors (static queries)")
        for box in a["anchors"]:
            _box(ax, box, "white", 0.6, alpha=0.5)
        for i, q in enumerate(exp.queries):
            _box(ax, a["anchors"][q], LEVEL_COLOURS[i % len(LEVEL_COLOURS)], 2.0, label=f"query {q}")
        ax.legend(loc="lower right", fontsize=7)
        fig.suptitle(QUERY_NOTES["static"], fontsize=8, wrap=True)
        return fig
    levels = len(a["objectness"])
    fig, axes = _figure(levels + 1, 1)
    h, w = exp.size
    top = max(float(m.max()) for m in a["objectness"])
    tokens, token_levels = a["proposal_tokens"], a["proposal_levels"]
    start = 0
    for lvl, objectness in enumerate(a["objectness"]):
        ax = axes[0, lvl]
        lh, lw = objectness.shape
        picked = tokens[token_levels == lvl] - start
        _show(ax, exp, f"level {lvl} ({lh}x{lw}): {len(picked)} selected", dim=0.9)
        shown = ax.imshow(objectness, extent=(0, w, h, 0), cmap="magma", alpha=0.6, vmin=0, vmax=top,
                          interpolation="nearest")
        ax.scatter((picked % lw + 0.5) / lw * w, (picked // lw + 0.5) / lh * h, s=9, c="cyan",
                   edgecolors="black", linewidths=0.4)
        start += lh * lw
    fig.colorbar(shown, ax=axes[0, :levels].tolist(), fraction=0.02, pad=0.01, label="encoder score")
    ax = axes[0, levels]
    drawn = min(PROPOSALS_DRAWN, len(a["proposal_boxes"]))
    _show(ax, exp, f"best {drawn} of {len(a['proposal_boxes'])} proposals (rank 1 brightest)", dim=0.8)
    ramp = colormaps["plasma"]
    for rank in reversed(range(drawn)):  # the best drawn last, on top
        fade = 1.0 - rank / max(drawn, 1)
        _box(ax, a["proposal_boxes"][rank], ramp(0.3 + 0.7 * fade), 0.6 + 1.8 * fade, alpha=0.35 + 0.65 * fade)
    fig.suptitle(QUERY_NOTES[exp.settings["queries"]] + "; dots: the selected tokens", fontsize=8)
    return fig


def _density(exp: Explanation, weights: np.ndarray) -> np.ndarray:
    """Dense attention over all tokens (S,) -> weight per finest-level cell: each coarser level's
    weight spread evenly over the finest cells it covers (the map sums to 1 like the weights)."""
    fh, fw = exp.shapes[0]
    total = np.zeros((fh, fw))
    start = 0
    for lh, lw in exp.shapes:
        level = weights[start: start + lh * lw].reshape(lh, lw)
        rows = np.minimum((np.arange(fh) + 0.5) * lh // fh, lh - 1).astype(int)
        cols = np.minimum((np.arange(fw) + 0.5) * lw // fw, lw - 1).astype(int)
        counts = np.bincount(rows, minlength=lh)[:, None] * np.bincount(cols, minlength=lw)[None]
        total += (level / np.maximum(counts, 1))[rows][:, cols]
        start += lh * lw
    return total


def sampling_figure(exp: Explanation) -> Any:
    """Rows: the drawn queries; columns: decoder layers. Deformable: every head's sampling points
    on every level, area proportional to the attention weight, around the layer's reference box.
    Dense: the attention weight over the image."""
    a = exp.arrays
    fig, axes = _figure(len(exp.layers), len(exp.queries))
    h, w = exp.size
    for i in range(len(exp.queries)):
        for j, layer in enumerate(exp.layers):
            ax, k = axes[i, j], layer - 1
            _show(ax, exp, f"{_query_title(exp, i, k)}, layer {layer}", dim=0.75)
            if "locations" in a:
                points, weights = a["locations"][i, k], a["weights"][i, k]  # (M, L, P, 2), (M, L, P)
                for lvl in range(points.shape[1]):
                    ax.scatter(points[:, lvl, :, 0].ravel(), points[:, lvl, :, 1].ravel(),
                               s=500 * weights[:, lvl].ravel(), c=LEVEL_COLOURS[lvl % len(LEVEL_COLOURS)],
                               alpha=0.8, edgecolors="white", linewidths=0.3, label=f"level {lvl}")
            else:
                density = _density(exp, a["attention"][i, k])
                ax.imshow(density, extent=(0, w, h, 0), cmap="magma", alpha=0.65, interpolation="nearest")
            _box(ax, a["references"][i, k], "white", 1.4, "--", label="reference box")
    if "locations" in a:
        axes[0, 0].legend(loc="lower left", fontsize=6, markerscale=0.5, framealpha=0.6)
        how = ("deformable attention: each dot is one sampling point of one head; dot area = its attention "
               "weight (the weights of each head sum to 1 over levels and points)")
    else:
        how = "dense attention: the weight of every memory token, averaged over the heads (sums to 1)"
    fig.suptitle(how, fontsize=8)
    return fig


def _zoom(ax: Any, boxes: np.ndarray, size: tuple[int, int]) -> None:
    """Axes limits around `boxes` (N, 4), with a margin, inside the image."""
    h, w = size
    x0, y0 = boxes[:, :2].min(0)
    x1, y1 = boxes[:, 2:].max(0)
    pad = 0.25 * max(x1 - x0, y1 - y0, 0.05 * max(h, w))
    ax.set_xlim(max(0.0, x0 - pad), min(float(w), x1 + pad))
    ax.set_ylim(min(float(h), y1 + pad), max(0.0, y0 - pad))


def refinement_figure(exp: Explanation) -> Any:
    """Per drawn query: its anchor box, then the box every decoder layer predicted."""
    from matplotlib import colormaps

    a = exp.arrays
    fig, axes = _figure(len(exp.queries), 1)
    layers = a["boxes"].shape[1]
    ramp = colormaps["viridis"]
    for i, q in enumerate(exp.queries):
        ax = axes[0, i]
        _show(ax, exp, _query_title(exp, i, layers - 1))
        _box(ax, a["anchors"][q], "white", 1.6, "--", label="anchor")
        for k in range(layers):
            _box(ax, a["boxes"][i, k], ramp(k / max(layers - 1, 1)), 1.2 + 1.2 * (k == layers - 1), label=f"layer {k + 1}")
        _zoom(ax, np.concatenate((a["anchors"][q][None], a["boxes"][i])), exp.size)
        ax.legend(loc="lower right", fontsize=6, framealpha=0.6)
    fig.suptitle("box refinement: from the anchor (dashed) through each decoder layer's box", fontsize=8)
    return fig


def denoising_figure(exp: Explanation) -> Any | None:
    """One denoising group: noised positive / negative boxes (dashed) and what the decoder made of
    them (solid, with the class score), over the ground truth (white)."""
    a = exp.arrays
    if "dn_truth" not in a:
        return None
    halves = [h for h in ("positive", "negative") if f"dn_{h}_in" in a]
    fig, axes = _figure(len(halves), 1, 4.2)
    colours = {"positive": "#3cb44b", "negative": "#e6194b"}
    for ax, half in zip(axes[0], halves):
        _show(ax, exp, f"{half} queries of group 1 of {int(a['dn_groups'])}", dim=0.8)
        for box in a["dn_truth"]:
            _box(ax, box, "white", 2.0, label="ground truth")
        for noised, out, score in zip(a[f"dn_{half}_in"], a[f"dn_{half}_out"], a[f"dn_{half}_scores"]):
            _box(ax, noised, colours[half], 1.3, "--", label="noised input")
            _box(ax, out, colours[half], 2.0, label="decoder output")
            ax.text(float(out[0]), float(out[1]), f"{float(score):.2f}", color="white", fontsize=7, va="top",
                    bbox={"facecolor": colours[half], "alpha": 0.8, "pad": 1, "linewidth": 0})
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=6, framealpha=0.6)
    fig.suptitle("contrastive denoising: numbers are the decoder's class score for each output", fontsize=8)
    return fig


def make_figures(exp: Explanation) -> dict[str, Any]:
    """name -> matplotlib Figure; denoising only with ground truth."""
    figures = {"selection": selection_figure(exp), "sampling": sampling_figure(exp),
               "refinement": refinement_figure(exp)}
    dn = denoising_figure(exp)
    if dn is not None:
        figures["denoising"] = dn
    return figures
