"""Bad input to `dinokit ablate` fails with one line before anything is trained."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dinokit.ablate import study as study_mod
from dinokit.ablate.arms import leave_one_out
from dinokit.ablate.cli import ablation_name, app
from dinokit.config import ConfigError, load_preset
from dinokit.errors import DinokitError

ROOT = Path(__file__).resolve().parents[1]


def _invoke(tmp_path: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "runs")])
    return result


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "0", "--steps", "2"], "the grid is empty"),
        (["--steps", "0"], "--steps must be positive"),
        (["--time-budget", "0"], "--time-budget must be positive"),
        (["--steps", "2", "--time-budget", "1"], "one budget"),
        (["--steps", "2", "--set", "train.epochs=0"], None),  # steps alone is a budget: fine up to storage
        (["--set", "train.epochs=0", "--set", "train.time_budget=0"], "budget is zero"),
        (["--steps", "2", "--storage", "sqlite:////no/such/dir/study.db"], "cannot open storage"),
        (["--steps", "2", "--storage", "postgresql://me:hunter2@127.0.0.1:1/x"], "cannot open storage"),
        (["--steps", "2", "--storage", "study.db"], "must be a database URL"),
        (["--steps", "2", "--no-cdn", "--study", "paper_table"], "do not combine"),
        (["--steps", "2", "--study", "missing.yaml"], "study file not found"),
        (["--steps", "2", "--set", "model.denoising=cdn2"], "model.denoising must be one of"),
        (["--steps", "2", "--preset", "huge"], "unknown preset"),
        (["--steps", "2", "--data", "/no/such/data"], "no such file or folder"),
        (["--steps", "2", "--jobs", "0"], "--jobs must be at least 1"),
        (["--steps", "2", "--eval-every", "0"], "--eval-every must be a positive number of steps"),
        (["--steps", "2", "--name", "a/b"], "--name 'a/b'"),
    ],
)
def test_bad_input_fails_before_training(tmp_path: Path, args: list[str], message: str | None) -> None:
    if message is None:  # control case: only the (bad) storage stops it
        args = [*args, "--storage", "sqlite:////no/such/dir/study.db"]
        message = "cannot open storage"
    result = _invoke(tmp_path, *args)
    assert isinstance(result.exception, DinokitError), result.output
    assert message in str(result.exception)
    assert "\n" not in str(result.exception)
    assert "hunter2" not in str(result.exception)  # passwords never printed
    assert not list((tmp_path / "runs").glob("ablate/*/train"))


def test_bad_study_file_switch_value(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("arms:\n  - name: a\n    model: {queries: mixd}\n")
    result = _invoke(tmp_path, "--study", str(bad), "--steps", "2")
    assert isinstance(result.exception, ConfigError)
    assert "model.queries must be one of mixed, pure, static, got 'mixd'" in str(result.exception)
    assert not (tmp_path / "runs").exists()


def test_unknown_flag_is_a_usage_error(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "--no-everything")
    assert result.exit_code == 2 and "No such option" in result.output


def test_entry_point_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "dinokit.ablate.cli", "--steps", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --steps must be positive, got 0"]


def test_report_of_unknown_ablation(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", "nothing", "--out", str(tmp_path)])
    assert isinstance(result.exception, DinokitError) and "no ablation named 'nothing'" in str(result.exception)
    assert not (tmp_path / "ablate").exists()  # asking for a report creates no empty database


def test_default_names_are_stable_per_command() -> None:
    assert ablation_name(["no-cdn"], False, None) == "no-cdn"
    assert ablation_name([], False, None) == "leave-one-out"
    assert ablation_name(["no-cdn", "no-lft"], True, None) == "grid-no-cdn+no-lft"
    assert ablation_name([], False, Path("ablations/paper_table.yaml")) == "paper_table"


def _never(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("training started despite bad input")


def test_api_rejects_zero_budget_and_bad_storage_before_training(tmp_path: Path) -> None:
    cfg = load_preset("tiny")
    cfg.train.epochs, cfg.train.time_budget = 0, 0.0
    spec = study_mod.AblationSpec("x", leave_one_out(["no-cdn"]), [1], cfg, tmp_path / "x", trainer=_never)
    with pytest.raises(ConfigError, match="budget is zero"):
        study_mod.run(spec)
    cfg.train.steps = 2
    spec = study_mod.AblationSpec("x", leave_one_out(["no-cdn"]), [], cfg, tmp_path / "x", trainer=_never)
    with pytest.raises(DinokitError, match="grid is empty"):
        study_mod.run(spec)
    spec = study_mod.AblationSpec("x", leave_one_out(["no-cdn"]), [1], cfg, tmp_path / "x",
                                  "mysql://u@127.0.0.1:1/db", trainer=_never)
    with pytest.raises(DinokitError, match="cannot open storage"):
        study_mod.run(spec)


def test_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    cfg = load_preset("tiny")
    cfg.train.steps = 2
    arms = leave_one_out(["no-cdn"])
    study_mod.prepare(study_mod.AblationSpec("x", arms, [1, 2], cfg, tmp_path / "x"))
    cfg.train.steps = 3
    with pytest.raises(DinokitError, match="other settings.*train.steps"):
        study_mod.run(study_mod.AblationSpec("x", arms, [1, 2], cfg, tmp_path / "x", trainer=_never))
    cfg.train.steps = 2
    with pytest.raises(DinokitError, match="other arms or seeds"):
        study_mod.run(study_mod.AblationSpec("x", arms, [1, 2, 3], cfg, tmp_path / "x", trainer=_never))
    cfg.train.threads = 7  # threads and device may differ between machines sharing a study
    study_mod.prepare(study_mod.AblationSpec("x", arms, [1, 2], cfg, tmp_path / "x"))
