"""Small shared pieces: the MLP used by box heads, and the inverse sigmoid of box refinement."""

from __future__ import annotations

import torch
from torch import Tensor, nn

INVERSE_SIGMOID_EPS = 1e-3  # official DINO clamp


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
