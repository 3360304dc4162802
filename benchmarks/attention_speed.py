"""Deformable sampling on the encoder's shapes at 800x1216: the per-level grid_sample loop against
the single gather, forward + backward, median of N after a warm-up, in one process.

    python benchmarks/attention_speed.py [--threads 1] [--repeats 5] [--height 800 --width 1216]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dinokit.model.sampling import sample_levels_gather, sample_levels_grid


def encoder_shapes(height: int, width: int, levels: int = 4) -> list[tuple[int, int]]:
    """ResNet strides 8, 16, 32 and an extra stride-64 level, as r50-4scale."""
    shapes, h, w = [], height, width
    for _ in range(3):
        h, w = (h + 1) // 2, (w + 1) // 2
    shapes.append((h, w))
    for _ in range(levels - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        shapes.append((h, w))
    return shapes


def encoder_locations(shapes: list[tuple[int, int]], heads: int, points: int) -> torch.Tensor:
    """(1, S, M, L, P, 2): each query's own pixel centre in every level plus offsets of up to
    `points` pixels of that level, as the encoder samples (its initial offsets are rings of 1..P px)."""
    centres = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        centres.append(torch.stack((xs.flatten() / w, ys.flatten() / h), -1))
    ref = torch.cat(centres)[None, :, None, None, None, :]  # (1, S, 1, 1, 1, 2)
    size = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32).view(1, 1, 1, -1, 1, 2)
    offsets = (torch.rand(1, ref.shape[1], heads, len(shapes), points, 2) * 2 - 1) * points
    return ref + offsets / size


def time_case(sample, inputs: tuple, repeats: int, backward: bool) -> list[float]:
    value, shapes, locations, weights = inputs
    times = []
    for i in range(repeats + 1):
        for t in (value, locations, weights):
            t.grad = None
        start = time.perf_counter()
        if backward:
            sample(value, shapes, locations, weights).square().sum().backward()
        else:
            with torch.no_grad():
                sample(value, shapes, locations, weights)
        if i:  # the first run warms up
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1216)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = encoder_shapes(args.height, args.width)
    S = sum(h * w for h, w in shapes)
    B, M, Dh, L, P = 1, 8, 32, len(shapes), 4
    inputs = (
        torch.randn(B, S, M, Dh, requires_grad=True),
        shapes,
        encoder_locations(shapes, M, P).requires_grad_(),
        torch.rand(B, S, M, L, P).softmax(-1).requires_grad_(),
    )
    print(f"shapes {shapes}, {S} queries, threads {args.threads}")
    for backward in (False, True):
        ref = statistics.median(time_case(sample_levels_grid, inputs, args.repeats, backward))
        fast = statistics.median(time_case(sample_levels_gather, inputs, args.repeats, backward))
        what = "forward+backward" if backward else "forward"
        print(f"{what:17s} grid_sample loop {ref:.3f} s   gather {fast:.3f} s   speed-up {ref / fast:.2f}x")


if __name__ == "__main__":
    main()
