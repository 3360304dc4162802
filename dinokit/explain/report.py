"""Writing an `Explanation` to a folder (PNGs, explain.json, explain.html), and the one-call
`write_selection` the ablation studio's gallery uses for each arm's selection.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dinokit.explain.html import render_html
from dinokit.files import reading, write_json, write_text, write_with

# dinokit.explain.explanation.Explanation, by name only: Explanation.save() calls this module, so
# importing it back (even for type checking) would make the two modules import each other
Explanation = Any

DPI = 100
# every file write_explanation can write (denoising.png only with ground truth): announced by
# `dinokit explain` before the model loads, so one that is an input is refused up front
OUTPUT_FILES = ("selection.png", "sampling.png", "refinement.png", "denoising.png", "explain.json", "explain.html")


def save_figure(fig: Any, path: Path) -> Path:
    """A PNG through the atomic writer."""
    return write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def write_explanation(exp: Explanation, folder: Path) -> dict[str, Path]:
    """All figures as PNGs, explain.json and explain.html in `folder`; returns name -> path. None
    may replace the explained image (refused before the first file is written)."""
    figures = exp.figures()
    names = [f"{name}.png" for name in figures] + ["explain.json", "explain.html"]
    with reading(exp.source, outputs={f"--out ({name})": folder / name for name in names}):
        folder.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for name, fig in figures.items():
            written[name] = save_figure(fig, folder / f"{name}.png")
        written["json"] = write_json(folder / "explain.json", exp.to_json())
        files = {name: path.name for name, path in written.items()}
        written["html"] = write_text(folder / "explain.html", render_html(exp, files))
    return written


def write_selection(checkpoint: str | Path, image: str | Path, path: str | Path, device: str = "cpu") -> Path:
    """Load `checkpoint`, explain `image` and write only its selection.png to `path` (for the
    ablation report's gallery: each arm's anchors side by side). Returns `path`."""
    import torch

    from dinokit.data.transforms import eval_transforms
    from dinokit.explain.build import explain_image
    from dinokit.explain.figures import selection_figure
    from dinokit.infer.detections import read_image
    from dinokit.infer.predictor import load_backend

    backend = load_backend(checkpoint, "torch", torch.device(device))
    exp = explain_image(backend, read_image(Path(image)), str(image), eval_transforms(backend.cfg.data),
                        torch.device(device))
    return save_figure(selection_figure(exp), Path(path))

