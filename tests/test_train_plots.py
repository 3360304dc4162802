"""results.png and metrics.csv from a training history: one panel per loss term and metric, losses
first, undefined values left out; curves.png still written."""

from __future__ import annotations

import math

import pandas as pd
from PIL import Image

from dinokit.training.plots import plot_curves, plot_results, result_series, write_metrics_csv

HISTORY = [
    {"step": 10, "epoch": 0.5, "loss": 9.0, "lr": 1e-4, "AP": 0.1, "APs": math.nan, "F1": 0.2, "elapsed": 3.0,
     "loss_giou": 1.5, "loss_bbox": 0.9},
    {"step": 20, "epoch": 1.0, "loss": 7.0, "lr": 1e-4, "AP": 0.3, "APs": math.nan, "F1": 0.4, "elapsed": 6.0,
     "loss_giou": 1.2, "loss_bbox": 0.7, "stopped": "patience: ..."},
]


def test_result_series_picks_every_loss_and_metric():
    series = result_series(HISTORY)
    assert list(series) == ["loss", "loss_giou", "loss_bbox", "lr", "AP", "F1"]  # APs never defined: no panel
    assert series["loss_giou"] == ([10.0, 20.0], [1.5, 1.2])
    assert series["F1"] == ([10.0, 20.0], [0.2, 0.4])


def test_plots_and_csv_are_written(tmp_path):
    plot_results(HISTORY, tmp_path / "results.png")
    plot_curves(HISTORY, [[1, 10.0], [20, 7.0]], tmp_path / "curves.png")
    write_metrics_csv([{**HISTORY[1], "per_class": {"a": 0.3}}], tmp_path / "metrics.csv")
    with Image.open(tmp_path / "results.png") as image:
        assert image.size == (1600, 520)  # 5 panel columns x 2 rows of 320 x 260 px
    with Image.open(tmp_path / "curves.png") as image:
        assert image.size == (1000, 400)
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert "per_class" not in table.columns and table["stopped"].tolist() == ["patience: ..."]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
