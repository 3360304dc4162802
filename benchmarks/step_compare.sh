#!/usr/bin/env bash
# The training step on a quiet machine (issue 28): eager vs compiled, fp32 vs bf16, the step's
# profile, and the r50 cases against HF Deformable DETR. Every job runs in its own process
# (benchmarks/speed.py), jobs interleaved, the matmul rate measured before each.
#
#   benchmarks/step_compare.sh prepare        # compile once into $DINOKIT_CACHE/compile (not timed;
#                                             # may run on a busy machine; ~5-15 min on 2 cores)
#   benchmarks/step_compare.sh run [OUTDIR]   # the measurement: ~11-13 min on a quiet 2-core host
#
# THREADS (default 2) sets the thread count of every job. `run` after `prepare` loads the compiled
# graphs from the cache (the warm-up still traces with dynamo: tens of seconds per compiled job).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
export DINOKIT_CACHE="${DINOKIT_CACHE:-$HOME/.cache/dinokit}"

case "${1:-run}" in
  prepare)
    python benchmarks/speed.py --cases tiny-train --precision fp32 bf16 --compile --repeats 1 --threads "$THREADS"
    ;;
  run)
    OUT="${2:-step_compare}"
    mkdir -p "$OUT"
    # 1. tiny step: eager fp32 | compiled fp32 | eager bf16 | compiled bf16, two interleaved rounds (~4 min)
    python benchmarks/speed.py --cases tiny-train --precision fp32 bf16 --compile-matrix --rounds 2 \
      --threads "$THREADS" --json "$OUT/tiny_matrix.json" | tee "$OUT/tiny_matrix.txt"
    # 2. where the tiny step's time goes, fp32 and bf16, eager (~1.5 min)
    python benchmarks/profile_step.py --cases tiny-train --precision fp32 bf16 --steps 5 \
      --threads "$THREADS" --json "$OUT/profile_tiny.json" | tee "$OUT/profile_tiny.txt"
    # 3. r50-4scale 2x320 step profile, fp32 (~1 min)
    python benchmarks/profile_step.py --cases r50-train-2x320 --precision fp32 --steps 2 \
      --threads "$THREADS" --json "$OUT/profile_r50.json" | tee "$OUT/profile_r50.txt"
    # 4. r50 against HF Deformable DETR, fp32, dinokit and HF alternating (~5 min)
    python benchmarks/speed.py --cases r50-infer-800x1216 r50-train-2x320 r50-train-2x512 --peers \
      --threads "$THREADS" --json "$OUT/r50_peers.json" | tee "$OUT/r50_peers.txt"
    ;;
  *)
    echo "usage: $0 prepare | run [OUTDIR]" >&2
    exit 2
    ;;
esac
