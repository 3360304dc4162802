"""The report on hand-made trial tables: statistics, paired intervals, files, plots."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from dinokit.ablate.arms import leave_one_out
from dinokit.ablate.cli import rich_table
from dinokit.ablate.report import (
    ReportData, display_table, paired_difference, render_markdown, report_data, summarize, write_report,
)
from dinokit.config import load_preset

# t quantile for a two-sided 95% interval: t(0.975; 2 dof) and t(0.975; 1 dof), from printed tables
T_2DOF = 4.302652729911275
T_1DOF = 12.706204736174705

ARMS = ["full", "no-cdn", "no-lft"]
AP = {  # (arm, seed) -> AP
    ("full", 0): 0.30, ("full", 1): 0.32, ("full", 2): 0.34,
    ("no-cdn", 0): 0.28, ("no-cdn", 1): 0.31, ("no-cdn", 2): 0.31,
    ("no-lft", 0): 0.25, ("no-lft", 1): 0.29,  # seed 2 failed
}


def _trials() -> pd.DataFrame:
    rows = []
    for number, ((arm, seed), ap) in enumerate(AP.items()):
        rows.append({"trial": number, "state": "COMPLETE", "arm": arm, "seed": seed, "AP": ap, "AP50": ap + 0.2,
                     "AP75": ap - 0.05, "APs": ap / 2, "train_time": 10.0 + number, "params": 1_500_000,
                     "error": ""})
    rows.append({"trial": 99, "state": "FAIL", "arm": "no-lft", "seed": 2, "AP": math.nan, "AP50": math.nan,
                 "AP75": math.nan, "APs": math.nan, "train_time": math.nan, "params": math.nan,
                 "error": "RuntimeError: out of memory"})
    return pd.DataFrame(rows)


def _history() -> pd.DataFrame:
    rows = []
    for number, ((arm, seed), ap) in enumerate(AP.items()):
        for step in (5, 10):
            rows.append({"trial": number, "arm": arm, "seed": seed, "step": step, "AP": ap * step / 10})
    return pd.DataFrame(rows)


def _data() -> ReportData:
    return ReportData("demo", ARMS, "full", _trials(), _history(), [0, 1, 2], {"budget": "10 steps per trial"},
                      {"full": "base config", "no-cdn": "denoising=dn", "no-lft": "lft=false"})


def test_mean_and_std_per_arm() -> None:
    s = summarize(_trials(), ARMS, "full").set_index("arm")
    assert s.loc["full", "n"] == 3 and s.loc["no-lft", "n"] == 2
    assert s.loc["full", "AP_mean"] == pytest.approx(0.32)
    assert s.loc["full", "AP_std"] == pytest.approx(0.02)  # sample std (n - 1)
    assert s.loc["no-cdn", "AP_mean"] == pytest.approx(0.30)
    assert s.loc["no-cdn", "AP_std"] == pytest.approx(math.sqrt((0.02**2 + 0.01**2 + 0.01**2) / 2))
    assert s.loc["no-lft", "AP_std"] == pytest.approx(math.sqrt(2 * 0.02**2))
    assert s.loc["full", "AP50_mean"] == pytest.approx(0.52)
    assert s.loc["full", "train_time_mean"] == pytest.approx(11.0)
    assert s.loc["no-lft", "failed"] == 1 and s.loc["full", "failed"] == 0
    assert s.loc["full", "params"] == 1_500_000


def test_paired_interval_matches_hand_computation() -> None:
    s = summarize(_trials(), ARMS, "full").set_index("arm")
    # no-cdn - full per seed: -0.02, -0.01, -0.03 -> mean -0.02, sd 0.01
    half = T_2DOF * 0.01 / math.sqrt(3)
    assert s.loc["no-cdn", "dAP"] == pytest.approx(-0.02)
    assert s.loc["no-cdn", "dAP_low"] == pytest.approx(-0.02 - half)
    assert s.loc["no-cdn", "dAP_high"] == pytest.approx(-0.02 + half)
    assert s.loc["no-cdn", "pairs"] == 3
    # no-lft pairs only seeds 0 and 1: -0.05, -0.03 -> mean -0.04, sd sqrt(2) * 0.01
    half = T_1DOF * (math.sqrt(2) * 0.01) / math.sqrt(2)
    assert s.loc["no-lft", "dAP"] == pytest.approx(-0.04)
    assert (s.loc["no-lft", "dAP_low"], s.loc["no-lft", "dAP_high"]) == pytest.approx((-0.04 - half, -0.04 + half))
    assert s.loc["full", "dAP"] == 0.0


def test_paired_difference_edge_cases() -> None:
    one = paired_difference(pd.Series([0.5], index=[0]), pd.Series([0.4, 0.3], index=[0, 1]))
    assert one.n == 1 and one.mean == pytest.approx(0.1) and math.isnan(one.low)
    none = paired_difference(pd.Series([0.5], index=[7]), pd.Series([0.4], index=[0]))
    assert none.n == 0 and math.isnan(none.mean)


def test_latest_completed_trial_counts_once_per_pair() -> None:
    trials = _trials()
    dup = trials.iloc[[0]].assign(trial=200, AP=0.40)  # the same (full, 0) finished again later
    s = summarize(pd.concat([trials, dup]), ARMS, "full").set_index("arm")
    assert s.loc["full", "n"] == 3
    assert s.loc["full", "AP_mean"] == pytest.approx((0.40 + 0.32 + 0.34) / 3)


def test_report_files_have_one_row_per_arm(tmp_path: Path) -> None:
    data = _data()
    write_report(data, tmp_path)
    for name in ("trials.csv", "report.md", "report.html", "ap.png", "convergence.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries
    for png in ("ap.png", "convergence.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    csv = pd.read_csv(tmp_path / "trials.csv")
    assert len(csv) == len(AP) + 1 and set(csv["state"]) == {"COMPLETE", "FAIL"}

    md = (tmp_path / "report.md").read_text()
    results = md.split("## Results")[1].split("\n\n")[1].splitlines()
    assert len(results) == 2 + len(ARMS)  # header, rule, one row per arm
    rows = {line.split("|")[1].strip(): line for line in results[2:]}
    assert list(rows) == ARMS
    assert "32.0 ± 2.0" in rows["full"] and "(baseline)" in rows["full"]
    half = 100 * T_2DOF * 0.01 / math.sqrt(3)
    assert f"−2.0 [{-2 - half:.1f}, {-2 + half:+.1f}]".replace("-", "−") in rows["no-cdn"]
    assert "2 (1 failed)" in rows["no-lft"]
    assert "1.50 M" in rows["full"]
    assert "## Failed trials" in md and "RuntimeError: out of memory" in md
    assert "no-lft/s2" in md.split("## Not finished")[1]

    html_text = (tmp_path / "report.html").read_text()
    table = pd.read_html(tmp_path / "report.html")[0] if _has_lxml() else None
    if table is not None:
        assert list(table["arm"]) == ARMS
    assert html_text.count("<tr>") >= 1 + len(ARMS)
    for arm in ARMS:
        assert f"<td>{arm}</td>" in html_text
    assert "RuntimeError: out of memory" in html_text


def _has_lxml() -> bool:
    try:
        import lxml  # noqa: F401
    except ImportError:
        return False
    return True


def test_html_escapes_user_text(tmp_path: Path) -> None:
    data = _data()
    data.meta["description"] = "<script>alert(1)</script>"
    write_report(data, tmp_path)
    assert "<script>" not in (tmp_path / "report.html").read_text()


def test_report_without_finished_trials_still_renders(tmp_path: Path) -> None:
    data = ReportData("empty", ARMS, "full", pd.DataFrame(), pd.DataFrame(), [0], {})
    summary = write_report(data, tmp_path)
    assert list(summary["n"]) == [0, 0, 0]
    assert "Not finished" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "convergence.png").is_file()


def test_terminal_table_has_one_row_per_arm() -> None:
    data = _data()
    table = rich_table(data, summarize(data.trials, data.arms, data.baseline))
    assert table.row_count == len(ARMS)
    assert "demo" in render_markdown(data, summarize(data.trials, data.arms, data.baseline))


def test_report_data_from_stored_records() -> None:
    arm_set = leave_one_out(["no-cdn"])
    base = load_preset("tiny")
    when = datetime(2024, 1, 1, 12, 0, 0)
    records = [
        {"trial": 0, "state": "COMPLETE", "arm": "full", "seed": 1, "started": when, "finished": when,
         "attrs": {"metrics": {"AP": 0.5, "AP50": 0.7}, "params": 10, "train_time": 3.0,
                   "history": [{"step": 2, "AP": 0.4}, {"step": 4, "AP": 0.5}]}},
        {"trial": 1, "state": "FAIL", "arm": "no-cdn", "seed": 1, "started": when, "finished": None,
         "attrs": {"error": "ValueError: bad", "history": [{"step": 2, "AP": 0.1}]}},
    ]
    data = report_data("x", arm_set, base, [1], records, {"budget": "4 steps"})
    t = data.trials.set_index("trial")
    assert t.loc[0, "denoising"] == "cdn" and t.loc[1, "denoising"] == "dn"  # switches as columns
    assert {"queries", "lft", "dn_draws", "neg_target", "attention"} <= set(t.columns)
    assert t.loc[0, "AP"] == 0.5 and t.loc[0, "steps"] == 4 and t.loc[1, "error"] == "ValueError: bad"
    assert t.loc[0, "started"] == "2024-01-01T12:00:00"
    assert list(data.history["trial"]) == [0, 0]  # curves of finished trials only
    assert data.meta["baseline"] == "full"


def test_an_interrupted_attempt_that_a_rerun_finished_is_not_counted_as_failed() -> None:
    """A trial interrupted (Ctrl-C, SIGTERM) and then rerun to completion leaves a FAIL row
    in storage; the arm's seeds cell says it was rerun, and 'failed' stays for seeds without a result."""
    trials = _trials()
    interrupted = trials.iloc[[0]].assign(trial=100, state="FAIL", AP=math.nan,
                                          error="interrupted (Ctrl-C or SIGTERM) at step 100")
    s = summarize(pd.concat([trials, interrupted]), ARMS, "full").set_index("arm")
    assert (s.loc["full", "failed"], s.loc["full", "rerun"]) == (0, 1)
    assert (s.loc["no-lft", "failed"], s.loc["no-lft", "rerun"]) == (1, 0)
    rows = display_table(s.reset_index(), "full").set_index("arm")["seeds"]
    assert rows["full"] == "3 (1 rerun)" and rows["no-lft"] == "2 (1 failed)"
    assert rows["no-cdn"] == "3"


def test_a_seed_left_interrupted_reads_interrupted_not_failed() -> None:
    """A study stopped with a trial in flight: that seed has no result yet and its latest attempt
    was interrupted (a rerun of the command trains it), which is not a failure of the arm."""
    trials = _trials()
    stopped = trials.iloc[[0]].assign(trial=101, state="FAIL", seed=3, AP=math.nan,
                                      error="interrupted (Ctrl-C or SIGTERM) at step 50")
    s = summarize(pd.concat([trials, stopped]), ARMS, "full").set_index("arm")
    assert (s.loc["full", "failed"], s.loc["full", "interrupted"], s.loc["full", "n"]) == (0, 1, 3)
    rows = display_table(s.reset_index(), "full").set_index("arm")["seeds"]
    assert rows["full"] == "3 (1 interrupted)" and rows["no-lft"] == "2 (1 failed)"
