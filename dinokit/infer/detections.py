"""One image's detections as a plain object: arrays, and conversions to the formats people use
(COCO results, a pandas table, `supervision.Detections`, a drawn image).

Names, the same everywhere: `class_id` is the detector's class index (0 .. C-1, into
`Detector.class_names`), `category_id` the dataset's COCO category id, and `name` / the JSON's
`label` the class name."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dinokit.errors import DataError, DinokitError


@dataclass
class Detections:
    """Detections of one image, in pixels of the original image (before any resize).

    `image_size` is (height, width); `source` is the file path, or a name such as "image0" for an
    in-memory image. `class_ids[i]` is the class index of box i, `names[i]` its class name.
    """

    xyxy: np.ndarray  # (N, 4) float32 x0 y0 x1 y1 pixels, clipped to the image
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64 class index of the detector (into Detector.class_names)
    names: list[str]
    image_size: tuple[int, int]  # (height, width)
    source: str
    category_ids: list[int] = field(default_factory=list, repr=False)  # COCO category id per class index
    image: Image.Image | None = field(default=None, repr=False, compare=False)  # in-memory inputs only

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def labels(self) -> np.ndarray:
        """Deprecated name of `class_ids` (a "label" elsewhere, as in the JSON, is the class name)."""
        warnings.warn("Detections.labels is deprecated: use Detections.class_ids (the class index); "
                      "Detections.names holds the class names", DeprecationWarning, stacklevel=2)
        return self.class_ids

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO results records (bbox x, y, w, h pixels); category_id is the dataset's category id."""
        ids = self.category_ids
        return [
            {"image_id": int(image_id), "category_id": int(ids[label]) if 0 <= label < len(ids) else int(label),
             "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "score": float(score)}
            for (x0, y0, x1, y1), score, label in zip(self.xyxy.tolist(), self.scores.tolist(), self.class_ids.tolist())
        ]

    def to_dict(self) -> dict[str, Any]:
        """The JSON record `dinokit predict` writes for an image (rounded: scores 1e-4, boxes 0.01 px):
        per detection its `label` (the class name), `score`, `box` (xyxy pixels) and `category_id`."""
        height, width = self.image_size
        ids = self.category_ids
        detections = [
            {"label": name, "score": round(float(s), 4), "box": [round(float(v), 2) for v in box],
             **({"category_id": int(ids[k])} if 0 <= k < len(ids) else {})}
            for name, s, box, k in zip(self.names, self.scores.tolist(), self.xyxy.tolist(), self.class_ids.tolist())
        ]
        return {"file": self.source, "width": width, "height": height, "detections": detections}

    def to_pandas(self) -> Any:
        """A DataFrame, one row per box: source, x0, y0, x1, y1, score, class_id, name (the column
        `label` of dinokit 0.x held the class index: it is `class_id` now)."""
        import pandas as pd

        return pd.DataFrame({
            "source": [self.source] * len(self), "x0": self.xyxy[:, 0], "y0": self.xyxy[:, 1],
            "x1": self.xyxy[:, 2], "y1": self.xyxy[:, 3], "score": self.scores, "class_id": self.class_ids,
            "name": list(self.names),
        })

    def to_supervision(self) -> Any:
        """A `supervision.Detections` (class_id = class_ids, data["class_name"] = names); needs the
        optional extra: pip install 'dinokit[supervision]'."""
        try:
            import supervision as sv
        except ImportError:
            raise DinokitError("to_supervision() needs the 'supervision' package: pip install 'dinokit[supervision]'") from None
        return sv.Detections(
            xyxy=self.xyxy.astype(np.float32).reshape(-1, 4), confidence=self.scores.astype(np.float32),
            class_id=self.class_ids.astype(int), data={"class_name": np.array(self.names, dtype=str).reshape(-1)},
        )

    def plot(self) -> Image.Image:
        """The image with the boxes drawn (see dinokit.infer.draw); small images come back upscaled."""
        from dinokit.infer.draw import draw_detections

        image = self.image if self.image is not None else read_image(Path(self.source))
        texts = [f"{name} {score:.2f}" for name, score in zip(self.names, self.scores.tolist())]
        return draw_detections(image, torch.from_numpy(self.xyxy), self.class_ids.tolist(), texts)

    def save(self, path: str | Path) -> Path:
        """Write plot() to `path` atomically (format from the suffix); returns the path. Never over
        the image it was detected on (`source`)."""
        from dinokit.files import reading, write_with

        image = self.plot()
        with reading(self.source, outputs={"annotated image": path}):
            return write_with(path, image.save)


def read_image(path: Path) -> Image.Image:
    """An RGB PIL image, or DataError naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {exc.__class__.__name__} (not an image file or corrupt)") from None
