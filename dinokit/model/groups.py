"""Training-only query aids from DINO's successors (ModelConfig.query_groups, one_to_many_queries).

In training the decoder's matching side holds T = K * G + M queries (K = num_queries,
G = query_groups, M = one_to_many_queries), laid out as

    [group 0 (K) | group 1 (K) | ... | group G-1 (K) | one-to-many (M)]

Group DETR: every group is matched one-to-one on its own and shares the decoder.
H-DETR (hybrid matching): the one-to-many block is matched to each ground-truth box repeated k
times. Self-attention stays inside each block (block-diagonal, as between denoising groups), and
the denoising queries see group 0 only, so group 0 and the denoising outputs are exactly those of
the model without aids. At inference only group 0 exists: the aids cost nothing there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class QueryLayout:
    one_to_one: int  # K: queries per group (group 0 is what inference keeps)
    groups: int = 1  # G: one-to-one groups
    one_to_many: int = 0  # M: one-to-many queries after the groups

    @property
    def total(self) -> int:
        return self.one_to_one * self.groups + self.one_to_many

    @property
    def has_aids(self) -> bool:
        return self.groups > 1 or self.one_to_many > 0

    def group_slice(self, g: int) -> slice:
        return slice(g * self.one_to_one, (g + 1) * self.one_to_one)

    def one_to_many_slice(self) -> slice:
        return slice(self.one_to_one * self.groups, self.total)

    def blocked(self, device: torch.device) -> Tensor:
        """(T, T) bool, True where query i may not attend to query j (different blocks)."""
        block = torch.arange(self.total, device=device) // self.one_to_one  # one-to-many -> G
        block = block.clamp(max=self.groups)
        return block[:, None] != block[None, :]


def attention_mask(layout: QueryLayout, dn_mask: Tensor | None, dn_size: int, device: torch.device) -> Tensor | None:
    """The decoder's (P + T, P + T) blocked mask from the denoising one (P + T, P + T, or None)
    and the layout; None when nothing is blocked."""
    if not layout.has_aids:
        return dn_mask
    P, T = dn_size, layout.total
    mask = dn_mask.clone() if dn_mask is not None else torch.zeros(P + T, P + T, dtype=torch.bool, device=device)
    mask[P:, P:] = layout.blocked(device)
    mask[:P, P + layout.one_to_one:] = True  # denoising queries see group 0 only
    return mask


def repeat_targets(targets: list[dict[str, Tensor]], k: int) -> list[dict[str, Tensor]]:
    """H-DETR's one-to-many targets: every ground-truth box (and label) repeated k times."""
    return [{**t, "boxes": t["boxes"].repeat(k, 1), "labels": t["labels"].repeat(k)} for t in targets]
