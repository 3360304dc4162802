"""MLflow beside TensorBoard (extra [mlflow]): `dinokit train --logger mlflow` logs the whole
configuration as parameters, every evaluation's metrics by step, tags for the preset and the
data, and the pictures and best checkpoint as artifacts, into a real local store (sqlite, the
default in the run folder), read back through MlflowClient; `--resume` continues the same run;
a logging failure mid-run stops the logging, not the training. The imports stay lazy.

Skips without mlflow; with DINOKIT_REQUIRE_EXTRAS=1 (CI) that is a failure (tests/services.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dinokit.config import load_preset
from dinokit.errors import DinokitError
from tests.cli_helpers import run_cli
from tests.services import extra
from tests.test_api import FAST

extra("mlflow", "mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from dinokit.training import mlflow_log  # noqa: E402

SETS = [a for item in [*FAST, "train.eval_every_steps=2", "train.tensorboard=false"] for a in ("--set", item)]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """`dinokit train --logger mlflow` for 3 steps (evaluations at steps 2 and 3), no URI given."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DINOKIT_CACHE", str(root / "cache"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        argv = ["train", "--steps", "3", "--batch-size", "4", "--out", str(root / "runs"), "--name", "ml",
                "--logger", "mlflow", *SETS]
        assert run_cli(argv) == 0
    run_dir = root / "runs" / "train" / "ml"
    client = MlflowClient(tracking_uri=mlflow_log.local_store_uri(run_dir))
    (run,) = client.search_runs([client.get_experiment_by_name("dinokit").experiment_id])
    return root, run_dir, client, run


def test_run_folder_holds_the_default_store(logged):
    _, run_dir, client, run = logged
    assert (run_dir / "mlflow.db").is_file() and (run_dir / "mlflow_run.json").is_file()
    assert run.info.status == "FINISHED" and run.info.run_name == "ml"
    location = client.get_experiment(run.info.experiment_id).artifact_location
    assert Path(location.removeprefix("file://")) == (run_dir / "mlartifacts").resolve()


def test_parameters_are_the_whole_config_flattened(logged):
    _, run_dir, _, run = logged
    from dinokit.config import load_yaml

    cfg = load_yaml(run_dir / "config.yaml", load_preset("tiny"))
    expected = mlflow_log.flat_params(cfg)
    assert run.data.params == expected and len(expected) > 80
    assert run.data.params["model.hidden_dim"] == "32" and run.data.params["train.steps"] == "3"


def test_every_evaluation_by_step_and_the_losses(logged):
    _, _, client, run = logged
    history = {name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
               for name in ("val/AP", "val/AP50", "train/loss", "train/lr")}
    assert [s for s, _ in history["val/AP"]] == [2, 3] and [s for s, _ in history["val/AP50"]] == [2, 3]
    assert [s for s, _ in history["train/loss"]] == [1, 2, 3] and len(history["train/lr"]) == 3
    import pandas as pd

    csv = pd.read_csv(logged[1] / "metrics.csv")  # the same numbers as the run's own table
    assert [v for _, v in history["val/AP"]] == pytest.approx(csv["AP"].tolist())
    assert any(name.startswith("AP_per_class/") for name in run.data.metrics)


def test_tags_name_the_preset_and_the_data(logged):
    _, run_dir, _, run = logged
    tags = run.data.tags
    assert tags["preset"] == "tiny" and tags["data"] == "shapes"
    assert tags["dinokit.run_dir"] == str(run_dir.resolve())


def test_pictures_diagnostics_and_best_checkpoint_are_artifacts(logged, tmp_path):
    _, run_dir, client, run = logged
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.png", "curves.png", "config.yaml", "metrics.csv", "diagnostics", "checkpoint"} <= top
    diagnostics = {a.path for a in client.list_artifacts(run.info.run_id, "diagnostics")}
    assert {"diagnostics/pr_curve.png", "diagnostics/f1_curve.png", "diagnostics/confusion_matrix.png"} <= diagnostics
    got = Path(client.download_artifacts(run.info.run_id, "checkpoint/best.pt", str(tmp_path)))
    assert got.read_bytes() == (run_dir / "best.pt").read_bytes()


def test_resume_continues_the_same_mlflow_run(logged, monkeypatch):
    root, run_dir, client, run = logged
    monkeypatch.setenv("DINOKIT_CACHE", str(root / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = ["train", "--resume", "--steps", "4", "--batch-size", "4", "--out", str(root / "runs"), "--name", "ml",
            "--logger", "mlflow", *SETS]
    assert run_cli(argv) == 0
    runs = client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in runs] == [run.info.run_id]  # no second run
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/AP")] == [2, 3, 4]
    assert runs[0].info.status == "FINISHED"


def test_tracking_uri_flag_then_environment_then_run_folder(tmp_path, monkeypatch):
    train = load_preset("tiny").train
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_log.tracking_uri(train, tmp_path) == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/env.db")
    assert mlflow_log.tracking_uri(train, tmp_path) == "sqlite:////elsewhere/env.db"
    train.mlflow_uri = "http://tracking.example:5000"
    assert mlflow_log.tracking_uri(train, tmp_path) == "http://tracking.example:5000"


def test_a_logging_failure_stops_logging_not_training(logged, tmp_path):
    said = []
    cfg = load_preset("tiny")
    cfg.train.mlflow_uri, cfg.train.mlflow_experiment = mlflow_log.local_store_uri(logged[1]), "failures"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    logger = mlflow_log.MlflowLogger.open(run_dir, cfg, said.append)

    def broken(*args, **kwargs):
        raise ConnectionError("tracking server went away")

    logger.client.log_batch = broken
    logger.evaluation(1, {"AP": 0.5})
    logger.evaluation(2, {"AP": 0.6})  # no second report, no exception
    logger.close("finished")
    assert said[-1] == "mlflow: logging stopped (ConnectionError: tracking server went away); training goes on"
    assert sum("logging stopped" in s for s in said) == 1


def test_missing_package_and_bad_logger_are_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(DinokitError, match=r"pip install 'dinokit\[mlflow\]'"):
        mlflow_log.require_mlflow()
    monkeypatch.chdir(tmp_path)
    assert run_cli(["train", "--logger", "mlflow", "--steps", "1"]) == 2  # before any data or run folder
    assert capsys.readouterr().err.strip() == ("error: --logger mlflow needs the mlflow package: "
                                               "pip install 'dinokit[mlflow]'")
    assert not (tmp_path / "runs").exists()
    assert run_cli(["train", "--logger", "wandb", "--steps", "1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --logger must be tensorboard or mlflow, got 'wandb'"


def test_help_imports_neither_mlflow_nor_the_hub_library():
    code = ("import sys\nfrom dinokit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('mlflow', 'huggingface_hub', 'safetensors') if m in sys.modules]\n"
            "print('heavy:', heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "heavy: []" in done.stdout, done.stdout[-500:] + done.stderr[-500:]
