"""The report's figures a person can read: one colour per arm in every plot, bands clipped to the
metric's range, single seeds drawn as their own curves; every output through files.py; the HTML
report in a real browser (headless Chromium; skipped where it is not installed)."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from dinokit.ablate import plots
from dinokit.ablate.report import ReportData, completed, summarize, write_report
from dinokit.ablate.stats import curve_auc
from tests.services import chromium, needs

ARMS = ["full", "no-cdn", "no-lft"]


def _trials(seeds: int) -> pd.DataFrame:
    rows = []
    for i, arm in enumerate(ARMS):
        for s in range(seeds):
            rows.append({"trial": 10 * i + s, "state": "COMPLETE", "arm": arm, "seed": s, "AP": 0.02 + 0.3 * s,
                         "AP50": 0.05 + 0.4 * s, "AP75": 0.0, "APs": math.nan, "train_time": 1.0, "params": 1e6,
                         "error": ""})
    return pd.DataFrame(rows)


def _history(trials: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{"trial": t.trial, "arm": t.arm, "seed": t.seed, "step": step, "AP50": t.AP50 * step / 10}
                         for t in trials.itertuples() for step in (5, 10)])


def _capture(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.__setitem__(Path(path).name, fig))
    return figures


def test_one_colour_per_arm_in_every_plot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    figures = _capture(monkeypatch)
    trials = _trials(3)
    summary = summarize(trials, ARMS, "full")
    plots.plot_ap("demo", "full", summary, completed(trials), tmp_path / "ap.png")
    plots.plot_convergence("demo", ARMS, "full", _history(trials), tmp_path / "convergence.png")
    plots.plot_forest("demo", "full", summary, tmp_path / "forest.png")
    want = plots.arm_colors(ARMS)
    assert len(set(want.values())) == 3
    bars = figures["ap.png"].axes[0].patches
    assert [to_hex(b.get_facecolor()) for b in bars] == [want[a] for a in ARMS]
    curves = {line.get_label().split(" (")[0]: to_hex(line.get_color())
              for line in figures["convergence.png"].axes[0].lines if not line.get_label().startswith("_")}
    assert curves == want
    forest = figures["forest.png"].axes[0].lines
    colours = {to_hex(line.get_color()) for line in forest if len(line.get_xdata()) == 2} - {"#000000"}  # 0 line
    assert colours == {want["no-cdn"], want["no-lft"]}  # the baseline has no difference row


def test_bands_are_clipped_and_few_seeds_show_their_own_curves(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    figures = _capture(monkeypatch)
    wild = _trials(3)  # AP50 0.05 / 0.45 / 0.85 over seeds: a t band of about -50..140 points
    plots.plot_convergence("demo", ARMS, "full", _history(wild), tmp_path / "convergence.png")
    ax = figures["convergence.png"].axes[0]
    bands = [np.asarray(c.get_paths()[0].vertices)[:, 1] for c in ax.collections]
    assert bands and all(v.min() >= 0 and v.max() <= 100 for v in bands)
    summary = summarize(wild, ARMS, "full")
    plots.plot_ap("demo", "full", summary, completed(wild), tmp_path / "ap.png")
    err = [c for c in figures["ap.png"].axes[0].collections if hasattr(c, "get_segments")]
    ys = np.concatenate([np.asarray(s)[:, 1] for c in err for s in c.get_segments()])
    assert ys.min() >= 0 and ys.max() <= 100
    two = _trials(2)  # fewer than 3 seeds: no band, one thin line per seed
    plots.plot_convergence("demo", ARMS, "full", _history(two), tmp_path / "c2.png")
    ax = figures["c2.png"].axes[0]
    assert not ax.collections
    assert len(ax.lines) == len(ARMS) * (1 + 2)  # per arm: the mean and each seed


def _data(trials: pd.DataFrame) -> ReportData:
    return ReportData("demo", ARMS, "full", trials, _history(trials), [0, 1, 2], {"budget": "10 steps"})


def test_every_report_file_goes_through_the_atomic_writer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import dinokit.files as files

    replaced: list[str] = []
    real = files.os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: (replaced.append(Path(b).name), real(a, b)))
    write_report(_data(_trials(3)), tmp_path)
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {"trials.csv", "summary.csv", "report.md", "report.html", "ap.png", "convergence.png",
                       "forest.png"}
    assert set(replaced) == written


def test_auc_without_numpy_trapezoid(monkeypatch: pytest.MonkeyPatch) -> None:
    """NumPy 1.26 (the lowest allowed) has no np.trapezoid."""
    monkeypatch.delattr(np, "trapezoid", raising=False)
    assert curve_auc(np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 1.0])) == pytest.approx(0.75)


CHROMIUM = chromium()


@needs("CHROMIUM", "" if CHROMIUM else "no Chromium here (apt-get install chromium)")
def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The same command as scripts in the README: the screenshot shows the report, not a blank page."""
    write_report(_data(_trials(3)), tmp_path)
    shot = tmp_path / "screenshot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1400,2400", (tmp_path / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1400)
    colours = {to_hex(c / 255) for c in pixels[::7, ::7].reshape(-1, 3)}
    want = set(plots.arm_colors(ARMS).values())
    assert len(colours) > 50 and want & colours  # text, tables and the arms' colours from the plots
