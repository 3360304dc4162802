"""The launcher flags without a cluster: checks that fail with one line before anything is created,
sbatch's time forms, one line where Slurm is not installed, and the sbatch script submitit will run
(this Python, this PYTHONPATH, the flags as sbatch options; submitit needs Slurm's srun on PATH to
write it). The jobs themselves run in tests/test_launch_slurm.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dinokit.errors import DinokitError
from dinokit.studies.launch import Launch
from dinokit.studies.workers import job_attrs
from tests.cli_helpers import run_cli
from tests.services import extra, needs, slurm_missing


@pytest.mark.parametrize("argv, message", [
    (["ablate", "--no-lft", "--launcher", "slurm"], "--launcher slurm needs a database server"),
    (["ablate", "--no-lft", "--launcher", "slurm", "--storage", "sqlite:///x.db"], "SQLite is one file"),
    (["tune", "--space", "tune_tiny", "--launcher", "slurm"], "--launcher slurm needs a database"),
    (["ablate", "--no-lft", "--partition", "gpu"], "need --launcher slurm"),
    (["train", "--nodes", "2"], "need --launcher slurm"),
    (["ablate", "--no-lft", "--launcher", "pbs"], "--launcher must be one of local, slurm"),
    (["train", "--launcher", "slurm", "--slurm-arg", "account"], "--slurm-arg 'account': expected KEY=VALUE"),
    (["train", "--launcher", "slurm", "--time", "1:2:3:4"], "--time '1:2:3:4'"),
    (["train", "--launcher", "slurm", "--mem", "lots"], "--mem 'lots'"),
    (["ablate", "--no-lft", "--launcher", "slurm", "--cpus-per-trial", "0", "--storage", "postgresql://h/db"],
     "CPUs must be at least 1"),
])
def test_bad_launcher_flags_are_one_line(argv: list[str], message: str, capsys, tmp_path: Path,
                                         monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not list(tmp_path.rglob("*.db")) and not (tmp_path / "runs").exists()  # nothing created


@pytest.mark.parametrize("text, minutes", [("90", 90), ("5:30", 6), ("1:00:00", 60), ("2-0", 2880),
                                           ("1-12:30", 2190), ("0-0:0:30", 1)])
def test_time_in_sbatch_forms_becomes_minutes(text: str, minutes: int) -> None:
    assert Launch("slurm", time=text).minutes == minutes


def test_job_id_is_recorded_only_inside_slurm(monkeypatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert job_attrs() == {}
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    assert job_attrs() == {"slurm_job": "4711"}


@needs("SLURM", slurm_missing())  # submitit builds no script without srun on PATH
def test_sbatch_script_runs_this_python_with_these_flags(tmp_path: Path, monkeypatch) -> None:
    extra("submitit", "cluster")
    from dinokit.studies.slurm import _executor

    monkeypatch.setenv("PYTHONPATH", "/my tree")
    launch = Launch("slurm", partition="gpu", time="1-00:00", gpus=2, cpus=8, mem="32G",
                    slurm_args=("account=lab", "ntasks-per-node=3"))
    text = _executor(launch, tmp_path, "dinokit-ablate-x")._make_submission_file_text("CMD", "u")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=1440", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --account=lab",
                 "#SBATCH --ntasks-per-node=3", "#SBATCH --job-name=dinokit-ablate-x", "export PYTHONPATH='/my tree'"):
        assert line in text.splitlines(), (line, text)
    assert "--ntasks-per-node=1" not in text  # --slurm-arg wins over submitit's own default
    plain = _executor(Launch("slurm"), tmp_path, "x")._make_submission_file_text("CMD", "u")
    assert "--time" not in plain and "--gpus" not in plain  # the partition's defaults
    assert _executor(Launch("slurm"), tmp_path, "x").python.strip("'") == sys.executable


def test_local_launch_is_the_default_and_accepts_sqlite() -> None:
    launch = Launch().check_storage("sqlite:////tmp/study.db")
    assert not launch.on_slurm and launch.threads == 1
    with pytest.raises(DinokitError, match="database server"):
        Launch("slurm").check_storage("sqlite:////tmp/study.db")


def test_slurm_launcher_without_slurm_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """A machine without Slurm's commands: `--launcher slurm` says so in one line (submitit's own
    RuntimeError would be a traceback), whatever the command."""
    extra("submitit", "cluster")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch, no srun
    assert run_cli(["train", "--launcher", "slurm", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --launcher slurm needs Slurm's commands on PATH: sbatch and srun not found (run it on " \
                  "a cluster's login node)\n", err
    from dinokit.studies.slurm import submit

    with pytest.raises(DinokitError, match="needs Slurm's commands on PATH"):
        submit(Launch("slurm"), [print], tmp_path / "logs")
