"""Small shared pieces: the MLP used by box heads, the inverse sigmoid of box refinement, and the
switch that keeps a region in fp32 under autocast."""

from __future__ import annotations

from typing import Any, ContextManager

import torch
from torch import Tensor, nn

INVERSE_SIGMOID_EPS = 1e-3  # official DINO clamp


def fp32_region(like: Tensor) -> ContextManager[Any]:
    """Autocast off on `like`'s device type: the region runs in the dtype of its (fp32) inputs."""
    return torch.autocast(like.device.type, enabled=False)


def as_fp32(x: Tensor) -> Tensor:
    """bf16/fp16 -> fp32; other dtypes (fp32, fp64 in tests) unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def inverse_sigmoid(x: Tensor, eps: float = INVERSE_SIGMOID_EPS) -> Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's box head); parameters under `layers.i`."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1)
        outs = [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def box_head(dim: int) -> MLP:
    """A 3-layer box-delta head whose last layer starts at zero (refinement starts at the anchor)."""
    head = MLP(dim, dim, 4, 3)
    nn.init.zeros_(head.layers[-1].weight)
    nn.init.zeros_(head.layers[-1].bias)
    return head
