"""The decoder self-attention's SDPA under bf16 autocast on the CPU: in bf16 (autocast's choice)
against in fp32 (dinokit's, `model.decoder.attention`), next to plain fp32, on one case of
speed.py, interleaved in one process (median of N rounds after a warm-up).

    python benchmarks/sdpa_precision.py [--case tiny-train] [--rounds 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import CASES, build, dinokit_step, random_batch  # noqa: E402

from dinokit.model import decoder  # noqa: E402

FP32_SDPA = decoder.attention


def bf16_sdpa(q, k, v, mask, dropout):  # what autocast does without dinokit's fp32 island
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=list(CASES), default="tiny-train")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    case = CASES[args.case]
    torch.manual_seed(0)
    model, criterion, classes, _ = build("dinokit", case)
    images, masks, targets = random_batch(case, classes)
    step = dinokit_step(model, criterion, images, masks, targets, case.train)
    variants = {"fp32": (None, FP32_SDPA), "bf16, SDPA bf16": (torch.bfloat16, bf16_sdpa),
                "bf16, SDPA fp32": (torch.bfloat16, FP32_SDPA)}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for round_ in range(args.rounds + 1):
        for name, (dtype, attention) in variants.items():
            decoder.attention = attention
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                step()
            if round_:  # round 0 warms up
                times[name].append(time.perf_counter() - start)
    decoder.attention = FP32_SDPA
    base = statistics.median(times["fp32"])
    print(f"{args.case}, {args.threads} threads, median of {args.rounds} interleaved rounds")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"  {name:18s} {med:.3f} s   {base / med:.2f}x fp32")


if __name__ == "__main__":
    main()
