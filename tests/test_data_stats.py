"""Label statistics by hand: instances, images, median box size, background images; labels.png."""

from __future__ import annotations

import math

from PIL import Image

from dinokit.data.stats import background_images, label_stats, plot_labels

DATA = {
    "images": [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 50} for i in (1, 2, 3)],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 10, 20]},
        {"id": 2, "image_id": 1, "category_id": 5, "bbox": [0, 0, 30, 40]},
        {"id": 3, "image_id": 2, "category_id": 5, "bbox": [0, 0, 50, 6]},
        {"id": 4, "image_id": 2, "category_id": 5, "bbox": [0, 0, 99, 49], "iscrowd": 1},  # left out
    ],
    "categories": [{"id": 5, "name": "a"}, {"id": 8, "name": "b"}],
}


def test_label_stats_by_hand():
    stats = label_stats(DATA, {5: "a", 8: "b"})
    a, b = stats["a"], stats["b"]
    assert (a.instances, a.images, a.median_width, a.median_height) == (3, 2, 30.0, 20.0)  # medians of 10/30/50, 20/40/6
    assert (b.instances, b.images) == (0, 0) and math.isnan(b.median_width)
    assert [img["id"] for img in background_images(DATA)] == [3]


def test_labels_png(tmp_path):
    path = plot_labels(DATA, {5: "a", 8: "b"}, tmp_path / "labels.png", "title")
    with Image.open(path) as image:
        assert image.size == (1500, 450)
