"""Why the group-sequential boundary is Pocock's with a first look at 4 seeds: the shapes compared.

For each first look and Wang-Tsiatis shape DELTA (0 O'Brien-Fleming, 1/2 Pocock) the boundary is
calibrated for the cap (dinokit/ablate/rules/groupseq.py) and run on the same normal studies as
today's t-mixture (rho 1/4): effects 1, 1.5, 2 x margin and sd 1, 2, 3 AP, margin 1 AP, a look
after every seed. Printed per shape: mean seeds used (an undecided study uses the cap), the share
of correct verdicts by the cap, seeds spent per correct verdict, each against the t-mixture, and
the wrong verdicts (which must stay near zero at these effects).

    python benchmarks/rules_shape.py                      # alpha 5% and 1%, cap 20, 2,000 studies per cell
    python benchmarks/rules_shape.py --cap 30 --reps 1000
"""

from __future__ import annotations

import argparse

import numpy as np

from dinokit.ablate import rules
from dinokit.ablate.rules import groupseq, tmixture
from dinokit.ablate.rules.simulate import draw

CELLS = [(e, sd) for e in (1.0, 1.5, 2.0) for sd in (1.0, 2.0, 3.0)]


def score(intervals, data: list[np.ndarray], cap: int, margin: float) -> tuple[float, float, float, int]:
    """Mean seeds used, share correct, seeds per correct verdict and wrong verdicts over the cells."""
    used, correct, wrong = [], 0, 0
    for d in data:
        code, at = rules.first_verdicts(rules.intersect(intervals(d)), margin)
        used.append(np.where(code == rules.UNDECIDED, cap, at))
        correct += int((code == rules.HELPS).sum())
        wrong += int(((code == rules.HURTS) | (code == rules.EQUIVALENT)).sum())
    seeds = np.concatenate(used)
    return float(seeds.mean()), correct / len(seeds), float(seeds.sum() / max(correct, 1)), wrong


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap", type=int, default=20)
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--margin", type=float, default=1.0)
    ap.add_argument("--alphas", nargs="+", type=float, default=[0.05, 0.01])
    args = ap.parse_args()
    data = [draw("normal", e * args.margin, sd, args.reps, args.cap, seed=i, bound=100.0)
            for i, (e, sd) in enumerate(CELLS)]
    for alpha in args.alphas:
        base = score(lambda d: tmixture.intervals(d, alpha), data, args.cap, args.margin)
        print(f"\nalpha {alpha:g}, cap {args.cap}: t-mixture (rho 1/4) uses {base[0]:.2f} seeds, "
              f"{100 * base[1]:.0f}% correct, {base[2]:.1f} seeds per correct verdict\n")
        print("| first look | DELTA | seeds used vs t-mixture | correct % | seeds per correct vs t-mixture | wrong |")
        print("|---:|---:|---:|---:|---:|---:|")
        for first in (3, 4, 5, 6):
            for delta in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
                s = score(lambda d: groupseq.intervals(d, alpha, args.cap, first, delta), data, args.cap, args.margin)
                mark = " (chosen)" if (first, delta) == (groupseq.FIRST, groupseq.DELTA) else ""
                print(f"| {first}{mark} | {delta:g} | {s[0] / base[0]:.3f} | {100 * s[1]:.0f} | {s[2] / base[2]:.3f} | "
                      f"{s[3]} |")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
