"""The question a study asks (each arm against the baseline, or `kind: steps`), the step table,
and each step's paired difference against a hand computation."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dinokit.ablate.arms import STEPS, Arm, ArmSet, grid, leave_one_out, load_study_file
from dinokit.ablate.report import ReportData, render_markdown, steps_table, summarize
from dinokit.ablate.steps import changes, comparisons, legacy_steps, step_differences
from dinokit.ablate.decide import Rule
from dinokit.ablate.verdicts import decisions_for, verdict_label
from dinokit.config import ConfigError

T_2DOF = 4.302652729911275  # t(0.975; 2 dof), from printed tables

CHAIN = ArmSet((Arm("a", {"queries": "static"}), Arm("b", {"queries": "pure"}),
                Arm("c", {"queries": "pure", "lft": True})), baseline="c", kind=STEPS)
AP50 = {("a", 0): 0.10, ("a", 1): 0.12, ("a", 2): 0.14,
        ("b", 0): 0.20, ("b", 1): 0.21, ("b", 2): 0.26,   # a -> b: +0.10, +0.09, +0.12
        ("c", 0): 0.20, ("c", 1): 0.22, ("c", 2): 0.25}   # b -> c: 0.00, +0.01, -0.01


def _done() -> pd.DataFrame:
    return pd.DataFrame([{"trial": i, "state": "COMPLETE", "arm": a, "seed": s, "AP": v / 2, "AP50": v, "auc": v,
                          "AP75": v, "APs": v, "train_time": 1.0, "params": 1.0, "error": ""}
                         for i, ((a, s), v) in enumerate(AP50.items())])


def test_shipped_studies_declare_their_question() -> None:
    paper = load_study_file("paper_table")
    assert paper.kind == STEPS and comparisons(paper)[0] == ("no-denoising → dn-detr-baseline", "dn-detr-baseline",
                                                             "no-denoising")
    assert load_study_file("successors").kind == "baseline" and load_study_file("seed_variants").kind == "baseline"


@pytest.mark.parametrize("flags", [["no-cdn", "no-dn"], ["static-queries", "pure-queries"],
                                   ["no-cdn", "no-dn", "static-queries", "pure-queries"]])
def test_removal_flags_always_compare_each_arm_with_the_full_model(flags: list[str]) -> None:
    """`ablate --no-cdn --no-dn` asks what each removal costs: no-dn against full, never against
    no-cdn, although the arms form a chain of one-setting changes (read as steps before)."""
    arms = leave_one_out(flags)
    assert legacy_steps(arms) == (len(flags) == 2)  # what studies stored before `kind` were asked
    assert comparisons(arms) == [(f"{f} vs full", f, "full") for f in flags]
    assert steps_table(ReportData("x", arms.names, "full", _done(), arm_set=arms)) is None
    assert all(ref == "full" for _, _, ref in comparisons(grid(flags)))


def test_steps_only_from_a_study_file_that_declares_them(tmp_path) -> None:
    body = "arms:\n  - {name: a, model: {queries: static}}\n  - {name: b, model: {queries: pure}}\n" \
           "  - {name: c, model: {queries: pure, lft: false}}\n"
    plain, steps = tmp_path / "plain.yaml", tmp_path / "steps.yaml"
    plain.write_text(body + "baseline: c\n")
    steps.write_text(body + "baseline: c\nkind: steps\n")
    assert comparisons(load_study_file(plain)) == [("a vs c", "a", "c"), ("b vs c", "b", "c")]
    assert comparisons(load_study_file(steps)) == [("a → b", "b", "a"), ("b → c", "c", "b")]
    (tmp_path / "bad.yaml").write_text(body + "kind: cumulative\n")
    with pytest.raises(ConfigError, match="kind must be one of baseline, steps, got 'cumulative'"):
        load_study_file(tmp_path / "bad.yaml")


def test_changes_name_the_one_setting() -> None:
    assert changes({"queries": "static"}, {"queries": "pure"}) == {"queries": ("static", "pure")}
    assert changes({}, {"lft": False}) == {"lft": (None, False)}
    assert changes({"a": 1}, {"a": 1}) == {}


def test_each_step_against_a_hand_computation() -> None:
    rows = step_differences(_done(), CHAIN).set_index("arm")
    assert list(rows.index) == ["b", "c"]
    assert rows.loc["b", "change"] == "queries: static → pure"
    assert rows.loc["c", "change"] == "lft: base → true"
    d = [0.10, 0.09, 0.12]
    mean, sd = sum(d) / 3, math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    assert rows.loc["b", "dAP50"] == pytest.approx(mean)
    assert rows.loc["b", "dAP50_low"] == pytest.approx(mean - T_2DOF * sd / math.sqrt(3))
    assert rows.loc["b", "dAP50_high"] == pytest.approx(mean + T_2DOF * sd / math.sqrt(3))
    assert rows.loc["b", "dAP50_resolved"] and not rows.loc["c", "dAP50_resolved"]
    assert rows.loc["c", "dAP50"] == pytest.approx(0.0, abs=1e-12)
    assert rows.loc["b", "dAP"] == pytest.approx(mean / 2)


def test_report_shows_steps_only_for_a_cumulative_study() -> None:
    done = _done()
    data = ReportData("chain", CHAIN.names, "c", done, pd.DataFrame(), [0, 1, 2], {}, arm_set=CHAIN)
    table = steps_table(data)
    assert table is not None and list(table["step"]) == ["a → b", "b → c"]
    resolved = "CI excludes 0 (descriptive)"
    assert table.loc[0, resolved] == "AP, AP50, AUC" and table.loc[1, resolved] == "no"
    assert table.loc[0, "ΔAP50 [95% CI, descriptive]"].startswith("+10.3 [")
    two = done[done["seed"] < 2]  # 2 pairs: an interval with 1 degree of freedom resolves nothing
    data2 = ReportData("chain", CHAIN.names, "c", two, pd.DataFrame(), [0, 1], {}, arm_set=CHAIN)
    assert steps_table(data2).loc[0, resolved] == "no"
    md = render_markdown(data, summarize(done, CHAIN.names, "c"))
    assert "## Steps" in md and "queries: static → pure" in md
    # with a rule, the step's one verdict is the rule's, and no interval is called resolved
    data.rule = Rule(1.0, "AP50", tuple(comparisons(CHAIN)), 3)
    data.decisions = decisions_for(data, data.rule)
    table = steps_table(data)
    assert "CI excludes 0 (descriptive)" not in table and "resolved" not in " ".join(table.columns)
    assert list(table["verdict (the rule's)"]) == [verdict_label(d, data.rule) for d in data.decisions]
    assert list(table["verdict (the rule's)"]) == ["undecided", "undecided"]  # 3 seeds: before the first look
    flat = ArmSet((Arm("c", {}), Arm("x", {"lft": False}), Arm("y", {"queries": "static", "dn_draws": 2})), "c")
    data = ReportData("flat", flat.names, "c", done, pd.DataFrame(), [0, 1, 2], {}, arm_set=flat)
    assert steps_table(data) is None
    assert "## Steps" not in render_markdown(data, summarize(done, flat.names, "c"))
