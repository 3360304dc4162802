"""An exported model (onnxruntime, OpenVINO) as a torch module, so that evaluation runs it unchanged.

The evaluator calls `model(images, masks)` and postprocesses the raw outputs itself; an exported
graph takes the original sizes too and returns the raw outputs beside its own postprocessing.
`ExportedGraph` feeds it unit sizes and hands back the raw outputs, so `dinokit eval model.onnx`
(or model.xml) scores the runtime's logits and boxes through the one evaluation path.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

RunFn = Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]]


class ExportedGraph(nn.Module):
    """`run(images, masks, orig_sizes) -> {name: tensor}` (OnnxDetector, OpenVinoDetector) as a
    module `(images, masks) -> {"pred_logits", "pred_boxes"}` on the images' device."""

    def __init__(self, run: RunFn) -> None:
        super().__init__()
        self.run = run

    def forward(self, images: Tensor, masks: Tensor) -> dict[str, Tensor]:
        sizes = torch.ones(images.shape[0], 2, dtype=torch.int64)  # (B, 2): the boxes in [0, 1], unused here
        out = self.run(images, masks, sizes)
        return {  # (B, K, C) logits, (B, K, 4) cxcywh in [0, 1]
            "pred_logits": out["pred_logits"].to(images.device), "pred_boxes": out["pred_boxes"].to(images.device),
        }
