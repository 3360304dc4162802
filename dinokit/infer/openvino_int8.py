"""int8 post-training quantisation of an OpenVINO IR with NNCF, calibrated on the model's own data.

`dinokit export --format openvino --int8 N` runs NNCF's `quantize` (min-max ranges from N
calibration images, SmoothQuant and bias correction, transformer preset) on the converted graph
before it is saved. The calibration images are the training split of the checkpoint's data (or
`--data`), taken evenly across it and resized as at evaluation, each fed as the IR's
(images, masks, orig_sizes). Matmuls and convolutions then run in int8 (VNNI / AMX where the CPU
has them); what that costs in AP is measured by benchmarks/openvino_speed.py.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np

from dinokit.config import Config, ConfigError
from dinokit.errors import DataError, DinokitError


def _require_nncf() -> Any:
    # NNCF looks for torch's C++ toolchain on import; on a machine without CUDA torch logs a warning
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
    except ImportError:
        raise DinokitError("--int8 needs the 'nncf' package: pip install 'dinokit[openvino]'") from None
    nncf.set_log_level(logging.WARNING)  # its INFO lines; the progress bars stay
    return nncf


def calibration_feeds(cfg: Config, count: int, data: str | None = None) -> list[dict[str, np.ndarray]]:
    """`count` images of the training split (evenly spaced), as the IR's inputs, one image each."""
    from dinokit.data.coco import build_dataset, resolve_source
    from dinokit.data.transforms import collate

    if count <= 0:
        raise ConfigError(f"int8 calibration needs a positive number of images, got {count}")
    data_cfg = copy.deepcopy(cfg.data)
    if data is not None:
        data_cfg.data = data
    dataset = build_dataset(resolve_source(data_cfg), data_cfg, "train", train=False)
    if len(dataset) == 0:
        raise DataError(f"no training images in {data_cfg.data} to calibrate the int8 model with")
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int))
    feeds = []
    for i in picks.tolist():
        images, masks, targets = collate([dataset[i]])  # (1, 3, H, W), (1, H, W), [target]
        sizes = np.asarray([[int(v) for v in targets[0]["orig_size"]]], dtype=np.int64)  # (1, 2) [h, w]
        feeds.append({"images": images.numpy(), "masks": masks.numpy(), "orig_sizes": sizes})
    return feeds


def quantize_int8(model: Any, feeds: list[dict[str, np.ndarray]]) -> Any:
    """The openvino.Model with int8 weights and activations (NNCF post-training quantisation)."""
    nncf = _require_nncf()
    return nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds), model_type=nncf.ModelType.TRANSFORMER)
