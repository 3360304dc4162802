"""`dinokit ablate` and `dinokit tune` with `--logger mlflow`: each trial is one MLflow run in one
experiment named after the study, tagged with its arm and seed (tune: its trial number), in a
real sqlite store read back through MlflowClient; rendering an ablation's verdicts tags them on
its trials' runs.

Skips without mlflow; with DINOKIT_REQUIRE_EXTRAS=1 (CI) that is a failure (tests/services.py)."""

from __future__ import annotations

import yaml

from tests.cli_helpers import run_cli
from tests.services import extra
from tests.test_api import FAST

extra("mlflow", "mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from dinokit.training.mlflow_log import local_store_uri  # noqa: E402

SETS = [a for item in [*FAST, "train.tensorboard=false", "train.threads=1"] for a in ("--set", item)]


def test_ablation_trials_are_runs_of_one_experiment_with_arm_seed_and_verdict_tags(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = ["ablate", "--no-cdn", "--seeds", "1", "--steps", "2", "--name", "cdn", "--out", str(tmp_path / "runs"),
            "--logger", "mlflow", *SETS]
    assert run_cli(argv) == 0
    study = tmp_path / "runs" / "ablate" / "cdn"
    client = MlflowClient(tracking_uri=local_store_uri(study))  # the default: the study folder's store
    experiment = client.get_experiment_by_name("cdn")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["arm"] for r in runs) == ["full", "no-cdn"]
    assert {r.data.tags["seed"] for r in runs} == {"42"} and {r.data.tags["study"] for r in runs} == {"cdn"}
    assert {r.info.run_name for r in runs} == {"trial-full-s42", "trial-no-cdn-s42"}
    assert all(r.info.status == "FINISHED" and r.data.params["model.hidden_dim"] == "32" for r in runs)
    by_arm = {r.data.tags["arm"]: r for r in runs}
    assert by_arm["no-cdn"].data.params["model.denoising"] == "dn" and by_arm["full"].data.params[
        "model.denoising"] == "cdn"
    assert all("verdict" not in r.data.tags for r in runs)  # no margin, no verdicts yet
    assert run_cli(["ablate", "report", "cdn", "--out", str(tmp_path / "runs"), "--margin", "1"]) == 0
    report = (study / "report.md").read_text()
    line = next(ln for ln in report.splitlines() if ln.startswith("| no-cdn vs full"))
    verdict = line.split("|")[2].strip()  # the report's words for it
    tagged = {r.data.tags["arm"]: r.data.tags.get("verdict") for r in client.search_runs([experiment.experiment_id])}
    assert tagged == {"full": f"no-cdn vs full: {verdict}", "no-cdn": f"no-cdn vs full: {verdict}"}
    assert client.get_experiment(experiment.experiment_id).tags["verdicts"] == f"no-cdn vs full: {verdict}"


def test_tune_trials_are_runs_of_one_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    space = tmp_path / "lr.yaml"
    space.write_text(yaml.safe_dump({"metric": "AP50", "params": {"train.lr": {"low": 1e-4, "high": 1e-3,
                                                                               "log": True}}}))
    uri = f"sqlite:///{tmp_path / 'tracking' / 'store.db'}"
    (tmp_path / "tracking").mkdir()
    argv = ["tune", "--space", str(space), "--trials", "2", "--steps", "1", "--out", str(tmp_path / "runs"),
            "--mlflow-uri", uri, *SETS]
    assert run_cli(argv) == 0
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("lr").experiment_id])
    assert sorted(r.data.tags["trial"] for r in runs) == ["0", "1"]
    assert {r.data.tags["study"] for r in runs} == {"lr"} and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.params["train.lr"] for r in runs}) == 2  # each trial's sampled value is a parameter
