"""The decision rules' error rates and seeds by simulation: rule x shape x sd x effect.

Each cell simulates `--reps` studies of paired differences (AP points) d = effect + sd * noise,
looked at after every seed up to `--cap`, each decided by its first decisive look (see
dinokit/ablate/rules/simulate.py for the shapes). Columns: wrong helps/hurts % (a sign verdict
against the truth; any sign verdict at effect 0), wrong no-effect % ('no effect' where
|effect| >= margin), correct %, undecided % at the cap, mean seeds used (an undecided study
uses the cap) and mean seeds among the studies that reached a correct verdict. Then the
issue-34 target: groupseq against tmixture at effects 1-2 x margin, sd 1-3, normal.

    python benchmarks/rules_sim.py rules_sim.csv --reps 4000           # the README's table
    python benchmarks/rules_sim.py rules_sim.csv --reps 500 --alpha 0.01
    python benchmarks/rules_sim.py rules_bound10.csv --bound 10 --rules bounded

It is a simulation, not a timing: any machine gives the same numbers for the same arguments.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from dinokit.ablate.rules.simulate import EFFECTS, RULES, SDS, SHAPES, grid, target, worst
from dinokit.files import write_with


def markdown(df: pd.DataFrame) -> str:
    lines = ["| rule | shape | sd | effect (x margin) | wrong helps/hurts % | wrong no-effect % | correct % | "
             "undecided % | mean seeds | seeds if correct |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in df.itertuples():
        lines.append(f"| {r.rule} | {r.shape} | {r.sd:g} | {r.effect_x_margin:g} | {r.wrong_sign_pct:.1f} | "
                     f"{r.wrong_same_pct:.1f} | {r.correct_pct:.0f} | {r.undecided_pct:.0f} | {r.seeds:.1f} | "
                     f"{r.seeds_correct:.1f} |")
    return "\n".join(lines)


def worst_markdown(df: pd.DataFrame, shapes: list[str]) -> str:
    w = worst(df)
    lines = ["| rule | " + " | ".join(shapes) + " |", "|---|" + "---|" * len(shapes)]
    for rule in dict.fromkeys(df["rule"]):
        cells = " | ".join(f"{w.loc[(rule, s), 'wrong_sign_pct']:.1f} / {w.loc[(rule, s), 'wrong_same_pct']:.1f}"
                           for s in shapes)
        lines.append(f"| {rule} | {cells} |")
    return "\n".join(lines)


def target_line(df: pd.DataFrame) -> str:
    t = target(df)
    return (f"target (normal, effects 1-2 x margin, sd 1-3): mean seeds used groupseq {t['groupseq_seeds']:.1f} "
            f"vs tmixture {t['tmixture_seeds']:.1f} ({100 * t['fewer_seeds']:.0f}% fewer); correct verdicts by the "
            f"cap {100 * t['groupseq_correct']:.0f}% vs {100 * t['tmixture_correct']:.0f}%; seeds spent per correct "
            f"verdict {t['groupseq_per_correct']:.1f} vs {t['tmixture_per_correct']:.1f} "
            f"({100 * t['fewer_per_correct']:.0f}% fewer)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="where to write the full table (CSV)")
    ap.add_argument("--reps", type=int, default=2000, help="studies per cell")
    ap.add_argument("--alpha", type=float, default=0.05, help="per comparison")
    ap.add_argument("--margin", type=float, default=1.0, help="AP points")
    ap.add_argument("--cap", type=int, default=20)
    ap.add_argument("--bound", type=float, default=100.0, help="|difference| <= bound (AP points), for bounded")
    ap.add_argument("--seed", type=int, default=34)
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    ap.add_argument("--sds", nargs="+", type=float, default=list(SDS))
    args = ap.parse_args()
    start = time.monotonic()
    df = grid(args.rules, args.shapes, args.sds, list(EFFECTS), margin=args.margin, alpha=args.alpha, cap=args.cap,
              reps=args.reps, seed=args.seed, bound=args.bound)
    write_with(args.csv, lambda p: df.to_csv(p, index=False))
    print(f"alpha {args.alpha:g} per comparison, margin {args.margin:g} AP, cap {args.cap}, bound {args.bound:g} AP, "
          f"{args.reps} studies per cell, a look after every seed\n")
    print(markdown(df))
    print("\nlargest wrong helps/hurts % / wrong no-effect % over spreads and effects:\n")
    print(worst_markdown(df, args.shapes))
    if {"groupseq", "tmixture"} <= set(args.rules) and "normal" in args.shapes:
        print("\n" + target_line(df))
    print(f"\n{len(df)} cells in {time.monotonic() - start:.0f} s; table written to {args.csv}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
