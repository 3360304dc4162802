"""Writing an `Explanation` to a folder (PNGs, explain.json, explain.html). Nothing here imports
the modules that build an `Explanation` (explanation.py, build.py): they call this one."""

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
