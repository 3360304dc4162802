"""Multi-scale deformable sampling: bilinear samples of every level, weighted and summed per query.

Two implementations with the same semantics as the official CUDA kernel (bilinear, zero padding,
align_corners=False, pixel centres at (i + 0.5) / size):

- `sample_levels_grid`: one `grid_sample` per level, the straightforward form. It is the reference
  the tests hold the fast form to, and the form exported to ONNX (GridSample is a standard op).
- `sample_levels_gather`: every bilinear corner of every level becomes one row index into the
  flattened value and one weight (bilinear weight x attention weight x in-bounds), and a single
  `embedding_bag(mode="sum")` gathers and sums them. No Python loop over levels or points, and no
  (batch, query, head, level, point, channel) tensor is ever materialised: a forward reads each
  corner row once. Its backward scatters the value gradient in cache-sized chunks (sorted and
  deterministic under `--deterministic` on an accelerator) and leaves the per-corner weight
  gradient to embedding_bag's own kernel.

`deformable_sampling` picks the fast form, except while exporting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dinokit.model.heads import as_fp32, fp32_region

Shapes = list[tuple[int, int]]  # (H_l, W_l) of every level, finest first


class LevelShapes(list):
    """`Shapes` (Python ints, for splits and loops) carrying the same sizes as one (L, 2) int64
    (H, W) tensor on the model's device, `table`, built once per forward: the attention layers and
    sampling blocks read it instead of each copying the sizes host-to-device (a CUDA sync each)."""

    def __init__(self, shapes: Shapes, table: Tensor) -> None:
        super().__init__(shapes)
        self.table = table


def level_table(shapes: Shapes, device: torch.device) -> Tensor:
    """(L, 2) int64 (H_l, W_l) on `device`: the forward's `LevelShapes.table`, else built here.
    Built by stacking, not `torch.tensor`, so that the ONNX tracer keeps the sizes symbolic (they
    are ints in eager mode, traced 0-dim tensors during export)."""
    if isinstance(shapes, LevelShapes):
        return shapes.table
    return torch.stack([torch.stack([torch.as_tensor(h), torch.as_tensor(w)]) for h, w in shapes]).to(device)

_QUERY_BLOCK = 32768  # (query, head) pairs per block: the block's corner tensors stay in cache
_SCATTER_ROWS = 512  # queries per chunk in the value-gradient scatter: keeps the chunk in L2 on a CPU


def sample_levels_grid(value: Tensor, shapes: Shapes, locations: Tensor, weights: Tensor) -> Tensor:
    """value (B, S, M, Dh); locations (B, Q, M, L, P, 2) (x, y) in [0, 1]; weights (B, Q, M, L, P).
    Returns (B, Q, M * Dh)."""
    B, _, M, Dh = value.shape
    _, Q, _, L, P, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = per_level[lvl].flatten(2).transpose(1, 2).reshape(B * M, Dh, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*M, Q, P, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*M, Dh, Q, L*P)
    w = weights.transpose(1, 2).reshape(B * M, 1, Q, L * P)
    out = (stacked * w).sum(-1).view(B, M * Dh, Q)
    return out.transpose(1, 2).contiguous()


def _coefficients(fx: Tensor, fy: Tensor, attw: Tensor, inside_x: Tensor, inside_y: Tensor) -> Tensor:
    """(4*L*P, B*Q*M) corner coefficients in (dy, dx, level, point) order from (L, P, N) parts:
    attention weight x bilinear weight, 0 for a corner outside its map. Transposed: the gather
    wants (N, 4*L*P), the backward's chunks read it as it is."""
    wx = torch.stack((1 - fx, fx)) * inside_x  # (2, L, P, N) for dx = 0, 1
    wy = torch.stack((1 - fy, fy)) * inside_y * attw
    return (wy[:, None] * wx[None]).view(-1, fx.shape[-1])  # (2, 2, L, P, N) flattened



# embedding_bag's private backward kernel for per-sample weights; torch builds without it get the
# gather below (same sums, one (N*K, C) temporary more)
_WEIGHTS_KERNEL = getattr(torch.ops.aten, "_embedding_bag_per_sample_weights_backward", None)


def per_sample_weights_grad(grad: Tensor, table: Tensor, rows: Tensor, offsets: Tensor, bag_of: Tensor) -> Tensor:
    """(N*K,) <grad[bag_of[j]], table[rows[j]]>: d out / d per-sample weight j of a sum embedding_bag."""
    if _WEIGHTS_KERNEL is not None:
        return _WEIGHTS_KERNEL(grad, table, rows, offsets, bag_of, 0)  # mode 0 = sum
    return (grad[bag_of] * table[rows]).sum(-1)


def deterministic_scatter(device: torch.device) -> bool:
    """Whether the value-gradient scatter must take the deterministic form: `--deterministic`
    (torch's deterministic algorithms) on an accelerator, where index_add_ may add with atomics
    (some torch versions reroute it under that mode, older ones do not). A CPU's index_add_
    already adds in a fixed order, and is faster."""
    return device.type != "cpu" and torch.are_deterministic_algorithms_enabled()


class _BilinearGather(torch.autograd.Function):
    """out[n] = sum_k coeffs[n, k] * table[rows[n, k]], coefficients built inside from the
    fractional positions and attention weights.

    Forward: one embedding_bag. Backward: the per-corner coefficient gradient from
    embedding_bag's own kernel, mapped to fx, fy and the attention weight by hand (saving 3
    (L, P, N) tensors instead of the ~15 an autograd graph of the coefficients keeps), and the
    table gradient scattered in chunks of a few hundred queries (embedding_bag's own sorts every
    index: ~20x slower than its forward on a CPU).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, table: Tensor, rows: Tensor, fx: Tensor, fy: Tensor, attw: Tensor, inside_x: Tensor, inside_y: Tensor
    ) -> Tensor:
        coeffs = _coefficients(fx, fy, attw, inside_x, inside_y).t().contiguous()
        ctx.save_for_backward(table, rows, fx, fy, attw, inside_x, inside_y)
        return F.embedding_bag(rows, table, per_sample_weights=coeffs, mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        table, rows, fx, fy, attw, inside_x, inside_y = ctx.saved_tensors
        grad = grad.contiguous()
        grad_table = grad_fx = grad_fy = grad_attw = None
        n, k = rows.shape
        if any(ctx.needs_input_grad[2:5]):
            # d out / d coeffs[n, k] = <grad[n], table[rows[n, k]]>: embedding_bag's own kernel for
            # exactly this (the op its autograd calls), without recomputing the forward
            offsets = torch.arange(0, n * k, k, dtype=rows.dtype, device=rows.device)
            bag_of = torch.arange(n, dtype=rows.dtype, device=rows.device).repeat_interleave(k)
            grad_coeffs = per_sample_weights_grad(grad, table, rows.reshape(-1), offsets, bag_of)
            g = grad_coeffs.view(n, k).t().reshape(2, 2, *fx.shape)  # (dy, dx, L, P, N)
            ix, iy = inside_x.to(fx.dtype), inside_y.to(fx.dtype)
            wx = torch.stack((1 - fx, fx)) * ix
            wy = torch.stack((1 - fy, fy)) * iy  # without the attention weight
            grad_attw = (g * (wy[:, None] * wx[None])).sum((0, 1))
            d_wx = g[:, 1] * ix[1] - g[:, 0] * ix[0]  # (dy, L, P, N): d / d fx through wx[dx]
            d_wy = g[1] * iy[1] - g[0] * iy[0]  # (dx, L, P, N): d / d fy through wy[dy]
            grad_fx = attw * (wy * d_wx).sum(0)
            grad_fy = attw * (wx * d_wy).sum(0)
        if ctx.needs_input_grad[0]:
            coeffs = _coefficients(fx, fy, attw, inside_x, inside_y)  # (K, N), read per chunk
            grad_table = torch.zeros_like(table)
            chunk = _SCATTER_ROWS if table.device.type == "cpu" else n
            buffer = grad.new_empty(min(chunk, n), k, grad.shape[1])  # reused: no page faults per chunk
            ordered = deterministic_scatter(table.device)
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                part = buffer[: stop - start]
                torch.mul(coeffs[:, start:stop].t()[:, :, None], grad[start:stop, None, :], out=part)
                # int64 indices: index_add_ is ~3x slower with int32 ones on a CPU
                index, values = rows[start:stop].reshape(-1).long(), part.view(-1, grad.shape[1])
                if ordered:  # sorts the indices and adds in their order: the same sums every run
                    grad_table.index_put_((index,), values, accumulate=True)
                else:  # a CPU adds in index order; a GPU adds with atomics, in whatever order they land
                    grad_table.index_add_(0, index, values)
        return grad_table, None, grad_fx, grad_fy, grad_attw, None, None


def corner_rows(
    shapes: Shapes, locations: Tensor, table_rows: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """For every query, head, level, point and bilinear corner: its row in the (B*S*M, Dh) table,
    and the parts its coefficient is made of.

    The arithmetic runs with (batch, query, head) as the innermost, contiguous dimension, so each
    elementwise op streams long vectors against per-level scalars (with (level, point) innermost
    the same ops ran 3-5x slower on short broadcast loops). Bilinear weights are separable: x and y
    are handled apart, two corners each.
    Returns rows (B*Q*M, 4*L*P) int32 (int64 past 2**31 rows) in (dy, dx, L, P) order; fx, fy
    (L, P, N) fractional pixel positions; inside_x, inside_y (2, L, P, N) bool per corner.
    """
    B, Q, M, L, P, _ = locations.shape
    N, dev, dtype = B * Q * M, locations.device, locations.dtype
    index_dtype = torch.int32 if table_rows < 2**31 else torch.int64
    sizes = level_table(shapes, dev).to(index_dtype)  # (L, 2) as (H, W)
    h, w = sizes[:, 0].view(L, 1, 1), sizes[:, 1].view(L, 1, 1)
    loc = locations.permute(5, 3, 4, 0, 1, 2).reshape(2, L, P, N)
    x = loc[0] * w.to(dtype) - 0.5  # pixel coordinates, (L, P, N)
    y = loc[1] * h.to(dtype) - 0.5
    with torch.no_grad():
        x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    with torch.no_grad():
        S = int(sum(a * b for a, b in shapes))
        starts = (torch.cumsum(h * w, 0) - h * w).view(L, 1, 1)
        zero = torch.zeros((), dtype=index_dtype, device=dev)
        xi, yi = x0.to(index_dtype), y0.to(index_dtype)
        inside_x = torch.stack(((xi >= 0) & (xi < w), (xi >= -1) & (xi < w - 1)))
        inside_y = torch.stack(((yi >= 0) & (yi < h), (yi >= -1) & (yi < h - 1)))
        cols = [xi.clamp(zero, w - 1) * M, (xi + 1).clamp(zero, w - 1) * M]
        batch_base = torch.arange(B, dtype=index_dtype, device=dev).view(B, 1, 1) * (S * M)
        base = (batch_base + torch.arange(M, dtype=index_dtype, device=dev)).expand(B, Q, M).reshape(1, 1, N)
        row_starts = [base + (starts + (yi + dy).clamp(zero, h - 1) * w) * M for dy in (0, 1)]
        rows = torch.stack([r + c for r in row_starts for c in cols])  # (4, L, P, N) in (dy, dx) order
    return rows.view(4 * L * P, N).t().contiguous(), fx, fy, inside_x, inside_y


def sample_levels_gather(value: Tensor, shapes: Shapes, locations: Tensor, weights: Tensor) -> Tensor:
    """Same contract as `sample_levels_grid`, one gather-and-sum over all levels and points.

    Queries go in blocks so that the per-corner rows and coefficients of a block (and the
    intermediates that build them) stay in cache: streaming them through memory for all 20k
    encoder queries at 800x1216 cost more than the gather itself.
    """
    B, S, M, Dh = value.shape
    table = value.reshape(B * S * M, Dh)  # row (b, s, m): the value as it is, no copy
    block = max(1, _QUERY_BLOCK // (B * M))
    outs = []
    for loc, w in zip(locations.split(block, 1), weights.split(block, 1)):
        rows, fx, fy, inside_x, inside_y = corner_rows(shapes, loc.to(value.dtype), table.shape[0])
        _, Qb, _, L, P = w.shape
        attw = w.to(value.dtype).permute(3, 4, 0, 1, 2).reshape(L, P, B * Qb * M)
        out = _BilinearGather.apply(table, rows, fx, fy, attw, inside_x, inside_y)
        outs.append(out.view(B, Qb, M * Dh))
    return outs[0] if len(outs) == 1 else torch.cat(outs, 1)


def deformable_sampling(value: Tensor, shapes: Shapes, locations: Tensor, weights: Tensor) -> Tensor:
    """The fast gather form; the grid_sample form while exporting to ONNX (standard ops only).

    Always fp32, also under bf16/fp16 autocast: bf16 positions (8-bit mantissa) move a sample by
    up to 1/256 of a map's side and its bilinear weights and the sum of 4*L*P corners round away
    small terms; low-precision sampling kernels are known to fail accuracy checks."""
    with fp32_region(value):
        value, locations, weights = as_fp32(value), as_fp32(locations), as_fp32(weights)
        if torch.onnx.is_in_onnx_export():
            return sample_levels_grid(value, shapes, locations, weights)
        return sample_levels_gather(value, shapes, locations, weights)
