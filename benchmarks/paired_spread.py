"""Where a study's verdicts cost seeds: the paired spread of each comparison, per decision measure.

For every comparison of a stored ablation (the steps of a `kind: steps` study, else each arm
against the baseline; under the study's stored rule's kind and alpha) prints the pairs, the mean paired difference and its sd over seeds for
each decision measure (`AP` at the last evaluation, `AP-tail` the mean over the last third of
the evaluations, `AP50`, `auc`), and the seeds the sequential rule and a fixed paired t test
would need at that spread. The measure with the smaller sd decides with fewer seeds.

    python benchmarks/paired_spread.py paper_decide --out runs            # runs/ablate/paper_decide
    python benchmarks/paired_spread.py paper --storage postgresql://... --margin 1.0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

MEASURES = ("AP", "AP-tail", "AP50", "auc")


def spread_table(storage: str, name: str, margin: float) -> pd.DataFrame:
    """One row per (comparison, measure): pairs, mean and sd of the difference (COCO points)."""
    from dataclasses import replace

    from dinokit.ablate.decide import Rule, seeds_to_decide
    from dinokit.ablate.records import report_data
    from dinokit.ablate.sequential import stored_rule
    from dinokit.ablate.stats import seeds_needed
    from dinokit.ablate.steps import comparisons
    from dinokit.ablate.study import read_trials
    from dinokit.ablate.verdicts import decisions_for

    spec, records = read_trials(storage, name)
    seeds = sorted({r["seed"] for r in records})
    data = report_data(name, spec.arm_set, spec.base, seeds, records, {})
    base = stored_rule(storage, name, spec.arm_set) or Rule(margin, "AP", tuple(comparisons(spec.arm_set)))
    rows = []
    for measure in MEASURES:
        rule = replace(base, margin=margin, measure=measure)  # the study's kind, alpha and comparisons
        for d in decisions_for(data, rule):
            rows.append({"comparison": d.name, "measure": measure, "pairs": d.n, "mean": 100 * d.mean,
                         "sd": 100 * d.sd, "verdict": d.verdict,
                         "rule needs": seeds_to_decide(d.mean, d.sd, margin / 100, rule.each, rule=rule),
                         "fixed t needs": seeds_needed(d.mean, d.sd)})
    return pd.DataFrame(rows)


def main() -> None:
    from dinokit.studies.storage import default_storage

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--out", default="runs", help="root folder of the runs (storage: OUT/ablate/NAME)")
    parser.add_argument("--storage", default=None)
    parser.add_argument("--margin", type=float, default=1.0, help="equivalence margin in COCO points")
    args = parser.parse_args()
    storage = args.storage or default_storage(Path(args.out) / "ablate" / args.name)
    table = spread_table(storage, args.name, args.margin)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.2f}".format):
        print(table.pivot_table(index="comparison", columns="measure", values=["mean", "sd"], sort=False))
        print()
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
