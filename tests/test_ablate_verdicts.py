"""One stored rule behind every verdict, through the CLI: the stop line, the terminal table,
report.md and report.html agree verdict by verdict; `ablate report --margin` adds an exploratory
view and never replaces a sequential study's verdicts; a cap that can decide nothing is refused.
Stand-in trainers (no training): the numbers are chosen so that the stored rule decides at its
first look, where a legacy (rho 1) t-mixture is still unbounded."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from dinokit.ablate.cli import app
from dinokit.errors import DinokitError
from tests.standin_result import StandInResult as _Result


def _stand_in(cfg: Any, on_epoch: Any = None, **kw: Any) -> _Result:
    """no-cdn 5 AP points below full with 0.4 points of paired spread: 'hurts' at the first look
    of rho 1/4 (4 seeds), where rho 1's interval is still unbounded (the bug of issue 34)."""
    seed = cfg.train.seed
    shared = 0.30 + 0.03 * np.random.default_rng([seed, 0]).normal()
    ap = shared - 0.05 + 0.004 * np.random.default_rng([seed, 1]).normal() if cfg.model.denoising == "dn" else shared
    run_dir = Path(cfg.train.out) / cfg.train.name
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"step": 1, "AP": ap - 0.1, "AP50": ap}, {"step": 2, "AP": ap, "AP50": ap + 0.2}]
    for row in rows:
        if on_epoch is not None:
            on_epoch(row)
    return _Result(run_dir, {"AP": ap, "AP50": ap + 0.2}, rows)


def _stop_line(output: str) -> dict[str, tuple[str, str]]:
    """{comparison: (verdict, seeds)} from 'stopped: <why>. Verdicts: name: verdict (n seeds); ...'."""
    line = next(x for x in output.splitlines() if x.startswith("stopped: "))
    tail = line.split(". Verdicts: ", 1)[1]
    out = {}
    for item in tail.split("; "):
        name, rest = item.split(": ", 1)
        verdict, seeds = rest.rsplit(" (", 1)
        out[name] = (verdict, seeds.split(" ")[0])
    return out


def _terminal(output: str) -> dict[str, tuple[str, str]]:
    """{comparison: (verdict, seeds)} from the rows under the terminal's 'Verdicts:' line."""
    lines = output.splitlines()
    rows = []
    for line in lines[lines.index("Verdicts:") + 1:]:
        if not line.startswith("  "):
            break
        rows.append(line.strip().split(" | "))
    return {r[0]: (r[1], r[2]) for r in rows}


def _markdown(text: str, title: str = "## Verdicts") -> dict[str, tuple[str, str]]:
    block = text.split(title, 1)[1].split("\n\n")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]
    return {r[0]: (r[1], r[2]) for r in rows}


def _html(text: str) -> dict[str, tuple[str, str]]:
    table = text.split("<h2>Verdicts</h2>", 1)[1].split("</table>", 1)[0]
    rows = [re.findall(r"<td>(.*?)</td>", r, re.S) for r in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    return {html.unescape(r[0]): (html.unescape(r[1]), r[2]) for r in rows if r}


def test_stop_line_terminal_and_reports_agree_verdict_by_verdict(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("dinokit.training.trainer.train", _stand_in)
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, ["--no-cdn", "--until-decided", "--margin", "1.0", "--max-seeds", "6",
                                      "--steps", "2", "--out", str(out), "--name", "e2e"])
    assert result.exit_code == 0, result.output
    folder = out / "ablate" / "e2e"
    stop = _stop_line(result.output)
    assert stop == {"no-cdn vs full": ("hurts", "4")}, result.output  # decided at groupseq's first look
    assert _terminal(result.output) == stop
    md = (folder / "report.md").read_text()
    assert _markdown(md) == stop and "group-sequential" in md and "rho=" not in md  # the stored kind's text
    assert _html((folder / "report.html").read_text()) == stop
    assert "every comparison has its verdict" in md  # the stop reason, in the report's own words

    # another margin on `ablate report`: a labelled view beside the verdicts, never instead of them
    again = CliRunner().invoke(app, ["report", "e2e", "--out", str(out), "--margin", "20"])
    assert again.exit_code == 0, again.output
    md = (folder / "report.md").read_text()
    assert _markdown(md) == stop
    view = "## Exploratory view: margin ±20 on AP (not the study's verdicts)"
    assert view in md and _markdown(md, view) == {"no-cdn vs full": ("hurts (by less than 20)", "4")}
    assert "Exploratory view: margin ±20 on AP" in again.output and _terminal(again.output) == stop
    same = CliRunner().invoke(app, ["report", "e2e", "--out", str(out), "--margin", "1.0"])
    assert same.exit_code == 0 and "Exploratory" not in (folder / "report.md").read_text()

    # a study stored before its rule was complete keeps what it ran with: rho 1, undecided at 4 seeds
    import optuna

    from dinokit.ablate.decide import RULE_ATTR
    from dinokit.studies.storage import open_storage

    study = optuna.load_study(study_name="e2e", storage=open_storage(f"sqlite:///{folder / 'study.db'}"))
    study.set_user_attr(RULE_ATTR, {"margin": 1.0, "measure": "AP", "seconds": 12.0})
    legacy = CliRunner().invoke(app, ["report", "e2e", "--out", str(out)])
    assert legacy.exit_code == 0, legacy.output
    md = (folder / "report.md").read_text()
    assert _markdown(md) == {"no-cdn vs full": ("undecided", "4 (not enough)")} and "rho=1)" in md


def test_a_cap_that_can_decide_nothing_is_refused_before_training(tmp_path: Path, monkeypatch) -> None:
    def never(*args: Any, **kw: Any) -> Any:
        raise AssertionError("training started")

    monkeypatch.setattr("dinokit.training.trainer.train", never)
    # five comparisons (every component left out) at 1% each: the first verdict needs 5 seeds
    result = CliRunner().invoke(app, ["--until-decided", "--max-seeds", "3", "--steps", "2",
                                      "--out", str(tmp_path / "runs")])
    assert isinstance(result.exception, DinokitError)
    assert str(result.exception) == ("--max-seeds 3 can decide nothing: with 5 comparison(s) the rule's first "
                                     "possible verdict comes at 4 seeds; use --max-seeds 4 or more")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kind, message", [("tmixture", None), ("groupseq", "a larger cap would void it")])
def test_a_larger_cap_continues_an_anytime_rule_and_is_refused_for_a_fixed_cap_one(kind: str, message: str | None) -> None:
    """The cap is part of the stored rule: the group-sequential rule, calibrated for its cap,
    refuses a larger one; the anytime-valid t-mixture raises the stored cap."""
    import optuna

    from dinokit.ablate import decide
    from dinokit.ablate.sequential import keep_rule

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    comps = (("b vs a", "b", "a"),)
    keep_rule(study, decide.Rule(1.0, "AP", comps, 8, kind=kind))
    assert keep_rule(study, decide.Rule(1.0, "AP", comps, 6)).max_seeds == 8  # smaller: stops sooner, stored kept
    if message is None:
        assert keep_rule(study, decide.Rule(1.0, "AP", comps, 12)).max_seeds == 12
        assert study.user_attrs[decide.RULE_ATTR]["max_seeds"] == 12
    else:
        with pytest.raises(DinokitError, match=message):
            keep_rule(study, decide.Rule(1.0, "AP", comps, 12))
    other = "groupseq" if kind == "tmixture" else "tmixture"  # --rule asked for explicitly: never silently swapped
    with pytest.raises(DinokitError, match=f"decides with --rule {kind}, not {other}"):
        keep_rule(study, decide.Rule(1.0, "AP", comps, 8, kind=other), kind_given=True)
