"""explain.html: every figure with a two-sentence caption of the DINO concept it shows, the notes,
the detections table and links to the JSON. Plain HTML, no scripts, no external files."""

from __future__ import annotations

from html import escape
from typing import Any

# dinokit.explain.explanation.Explanation, by name only: Explanation.save() calls report.py, which
# calls this module, so importing it back (even for type checking) would close a circle
Explanation = Any

TITLES = {"selection": "Query selection", "sampling": "Cross-attention", "refinement": "Box refinement",
          "denoising": "Contrastive denoising"}


def caption(name: str, settings: dict[str, Any]) -> str:
    """Two sentences: what the figure shows and the concept behind it, for this model's switches."""
    if name == "selection":
        if settings["queries"] == "static":
            return ("With static queries (DAB/DN-DETR) there is no query selection: every query starts from a "
                    "learned anchor box, the same for every image (the drawn queries are highlighted). DINO's "
                    "query selection would instead take the anchors from the encoder's best tokens on this image.")
        source = ("only these positions come from the image, while the content queries are learned (mixed "
                  "query selection, DINO's choice)" if settings["queries"] == "mixed" else
                  "both the positions and the content queries come from the image (pure, two-stage selection)")
        return ("The encoder scores every token of every feature level (heat maps), and the best "
                f"{settings['num_queries']} tokens (dots) become proposals whose boxes are the decoder's "
                f"anchors, shaded by rank on the right. Here {source}.")
    if name == "sampling":
        if settings["attention"] == "dense":
            return ("Dense attention: each decoder query attends to every memory token, and the map shows the "
                    "weights it gave them, averaged over the heads, around its reference box (dashed). This "
                    "model replaces deformable sampling with plain multi-head attention (attention: dense).")
        return (f"Deformable attention: each decoder query reads only {settings['points']} points per head and "
                "feature level, placed around its reference box (dashed) by learned offsets; a dot's area is "
                "the weight the model gave that point (each head's weights sum to 1). Dots on coarse levels "
                "gather context, dots on the finest level read detail.")
    if name == "refinement":
        lft = ("on in this model: layer i's box is built on layer i-1's undetached box, so layer i's loss also "
               "corrects the layer before" if settings["lft"] else
               "off in this model (look forward once: every layer refines a detached box)")
        return ("Iterative box refinement: each decoder layer predicts a correction to the box it was handed, "
                "from the query's anchor (dashed) to the final box (thickest). Look-forward-twice is what "
                f"trains this path; it is {lft}.")
    negatives = ("negatives were trained to predict the class and box of the closest ground truth "
                 "(neg_target closest-gt)" if settings["neg_target"] == "closest-gt" else
                 "negatives should score low, as they were trained to predict \"no object\"")
    if settings["denoising"] == "dn":
        return ("Denoising (DN-DETR): in training, noised copies of the ground truth (dashed) enter the decoder "
                "next to the matching queries and must be reconstructed. Here one group ran through the trained "
                "decoder: its outputs (solid) should sit on the ground truth (white).")
    return ("Contrastive denoising: in training, noised copies of the ground truth enter the decoder, positives "
            "(small noise) to be reconstructed and negatives (larger noise) to be rejected. Here one group ran "
            f"through the trained decoder: the positives' outputs should sit on the ground truth, and the {negatives}.")


def render_html(exp: Explanation, files: dict[str, str]) -> str:
    """The page; `files` maps figure names and 'json' to file names beside the page."""
    s = exp.settings
    rows = []
    for det, query in zip(exp.detections.to_dict()["detections"], exp.arrays["detection_queries"].tolist()):
        box = ", ".join(f"{v:.1f}" for v in det["box"])
        rows.append(f"<tr><td>{int(query)}</td><td>{escape(det['label'])}</td><td>{det['score']:.3f}</td>"
                    f"<td>{box}</td></tr>")
    table = ("<table><tr><th>query</th><th>class</th><th>score</th><th>box x0, y0, x1, y1 (px)</th></tr>"
             + "".join(rows) + "</table>") if rows else f"<p>No detection scored {exp.score} or more.</p>"
    figures = "".join(
        f"<figure><h2>{TITLES[name]}</h2><a href=\"{escape(files[name])}\"><img src=\"{escape(files[name])}\" "
        f"alt=\"{name}\"></a><figcaption>{escape(caption(name, s))}</figcaption></figure>"
        for name in TITLES if name in files
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in exp.notes)
    h, w = exp.size
    switches = ", ".join(f"{k} {escape(str(s[k]))}" for k in ("queries", "denoising", "attention", "lft", "neg_target"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dinokit explain: {escape(exp.source)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}}
img{{max-width:100%;border:1px solid #ccc}}figure{{margin:2em 0}}figcaption{{max-width:60em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style>
</head><body>
<h1>What DINO did on {escape(exp.source)}</h1>
<p>{w}x{h} px (the model saw {s['input_size'][1]}x{s['input_size'][0]}); {switches}; {s['num_queries']}
queries, {s['decoder_layers']} decoder layers. Every box and point is in the original image's pixels.</p>
<ul>{notes}</ul>
<h2>Detections (score &ge; {exp.score})</h2>
{table}
{figures}
<p>The numbers behind every figure: <a href="{escape(files['json'])}">{escape(files['json'])}</a>
(<code>Detector.explain(...).to_json()</code> in Python).</p>
</body></html>
"""
