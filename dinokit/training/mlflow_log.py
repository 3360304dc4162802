"""MLflow logs of a training run (optional extra `[mlflow]`), beside TensorBoard's.

One MLflow run per dinokit run: the whole configuration flattened as parameters
(`model.hidden_dim`, ...), the loss terms and lr at each step and every evaluation's metrics by
step (the names TensorBoard uses: `train/loss`, `val/AP`, `AP_per_class/<class>`), tags for the
preset, the data and any `train.tags` (a study trial's study, arm and seed), and at the end the
pictures (results.png, curves.png, the diagnostics), metrics.csv, config.yaml and the best
checkpoint as artifacts.

Where: `train.mlflow_uri`, else $MLFLOW_TRACKING_URI, else a sqlite store in the run folder
(`mlflow.db`, artifacts in `mlartifacts/`; MLflow 3 refuses new plain-folder stores). The run's
id is kept in `<run>/mlflow_run.json`, so `--resume` continues the same MLflow run. A logging
error after the run started is reported once and ends the MLflow logging, never the training.
`mlflow` is imported only when a run asks for it (it takes seconds).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from dinokit.config import Config, TrainConfig, plain
from dinokit.errors import DinokitError
from dinokit.version import __version__

STORE_FILE = "mlflow.db"  # the default store, in the run folder (a study's: the study folder)
ARTIFACTS = "mlartifacts"  # beside the sqlite file
RUN_FILE = "mlflow_run.json"  # {uri, experiment_id, run_id} of the run folder's MLflow run
DEFAULT_EXPERIMENT = "dinokit"
BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAMS_BATCH = 100  # ... and of params or tags
PICTURES = ("results.png", "curves.png")
DIAGNOSTICS = ("pr_curve.png", "f1_curve.png", "confusion_matrix.png", "confusion_matrix.csv",
               "confusion_matrix_normalised.csv", "per_class.csv")
RECORDS = ("config.yaml", "metrics.csv")
STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "stopped": "KILLED", "failed": "FAILED"}


def require_mlflow() -> Any:
    """The mlflow module, or a DinokitError that says how to install it."""
    try:
        import mlflow
    except ImportError:
        raise DinokitError("--logger mlflow needs the mlflow package: pip install 'dinokit[mlflow]'") from None
    return mlflow


def local_store_uri(folder: str | Path) -> str:
    """The sqlite store in `folder` (absolute, so the URI works from any working directory)."""
    return f"sqlite:///{(Path(folder) / STORE_FILE).resolve()}"


def tracking_uri(train: TrainConfig, folder: str | Path) -> str:
    """`train.mlflow_uri`, else $MLFLOW_TRACKING_URI, else the sqlite store in `folder`."""
    return train.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "") or local_store_uri(folder)


def flat_params(cfg: Config) -> dict[str, str]:
    """The whole configuration as `section.field` -> text (tags are logged as tags instead)."""
    out = {}
    for section, values in plain(cfg.to_dict()).items():
        for name, value in values.items():
            if (section, name) != ("train", "tags"):
                out[f"{section}.{name}"] = str(value)
    return out


def metric_name(name: str) -> str:
    """A name MLflow accepts: letters, digits and _ - . : / and spaces; anything else becomes _."""
    return re.sub(r"[^\w\-.:/ ]", "_", name)


def run_tags(cfg: Config, run_dir: Path) -> dict[str, str]:
    """preset, data, `train.tags`, dinokit's version and the run folder."""
    tags = {"data": str(cfg.data.data), "dinokit.version": __version__, "dinokit.run_dir": str(run_dir.resolve())}
    tags.update({str(k): str(v) for k, v in cfg.train.tags.items()})
    tags.setdefault("preset", "custom")  # a config that came from no preset (a YAML file alone)
    return tags


@contextlib.contextmanager
def quiet_store() -> Iterator[None]:
    """MLflow and alembic announce each database migration at INFO level; keep the console for
    dinokit's own lines while a store is opened."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def open_experiment(uri: str, name: str) -> tuple[Any, str]:
    """(an MlflowClient on `uri`, the id of experiment `name`, created if missing). A new
    experiment in a sqlite store keeps its artifacts beside the database file."""
    require_mlflow()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        with quiet_store():
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(name)
            if found is not None:
                return client, found.experiment_id
            location = None
            if uri.startswith("sqlite:///"):
                location = (Path(uri[len("sqlite:///"):]).parent / ARTIFACTS).resolve().as_uri()
            try:
                return client, client.create_experiment(name, artifact_location=location)
            except MlflowException:  # another worker of a study created it first
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
                return client, found.experiment_id
    except MlflowException as exc:
        raise DinokitError(f"MLflow store {uri}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


class MlflowLogger:
    """One MLflow run fed by the trainer (training/loggers.py's interface)."""

    def __init__(self, client: Any, run_id: str, run_dir: Path, say: Callable[[str], None]) -> None:
        self.client, self.run_id, self.run_dir, self.say = client, run_id, run_dir, say
        self.pending: list[Any] = []  # mlflow.entities.Metric, sent in batches
        self.broken = False

    @classmethod
    def open(cls, run_dir: Path, cfg: Config, say: Callable[[str], None]) -> "MlflowLogger":
        """Start (or, for a resumed run folder, continue) the run's MLflow run and log its
        parameters and tags; any problem here is a DinokitError before training starts."""
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        from dinokit.files import write_json

        uri = tracking_uri(cfg.train, run_dir)
        client, experiment = open_experiment(uri, cfg.train.mlflow_experiment or DEFAULT_EXPERIMENT)
        run_id, logged = _resumed_run(client, run_dir, uri), {}
        try:
            if run_id is None:
                tags = run_tags(cfg, run_dir)
                run_id = client.create_run(experiment, run_name=run_dir.name, tags=tags).info.run_id
                write_json(run_dir / RUN_FILE, {"uri": uri, "experiment_id": experiment, "run_id": run_id})
            else:
                client.update_run(run_id, status="RUNNING")
                logged = client.get_run(run_id).data.params
            # parameters cannot change in MLflow: a resumed run logs only the ones it lacks
            params = [Param(k, v) for k, v in flat_params(cfg).items() if k not in logged]
            for i in range(0, len(params), PARAMS_BATCH):
                client.log_batch(run_id, params=params[i:i + PARAMS_BATCH])
        except MlflowException as exc:
            raise DinokitError(f"MLflow store {uri}: {_first_line(exc)}") from None
        say(f"mlflow: run {run_id} in experiment '{cfg.train.mlflow_experiment or DEFAULT_EXPERIMENT}' at {uri}")
        return cls(client, run_id, run_dir, say)

    # ------------------------------------------------------------------ the logger interface

    def step(self, step: int, losses: dict[str, float], lr: float) -> None:
        values = {f"train/{name}": value for name, value in losses.items()}
        self._queue(step, {**values, "train/lr": lr})
        if len(self.pending) >= BATCH:
            self._guarded(self._flush)

    def evaluation(self, step: int, metrics: dict[str, Any]) -> None:
        values = {f"val/{name}": value for name, value in metrics.items() if not isinstance(value, dict)}
        values.update({f"AP_per_class/{cls}": ap for cls, ap in metrics.get("per_class", {}).items()})
        self._queue(step, values)
        self._guarded(self._flush)  # an evaluation shows in the UI as soon as it is done

    def close(self, ending: str = "finished") -> None:
        self._guarded(self._flush)
        self._guarded(self._log_artifacts)
        self._guarded(lambda: self.client.set_terminated(self.run_id, status=STATUS.get(ending, "FINISHED")))

    # ------------------------------------------------------------------ helpers

    def _queue(self, step: int, values: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        for name, value in values.items():  # undefined (NaN) metrics: no point, as in TensorBoard
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.pending.append(Metric(metric_name(name), float(value), stamp, int(step)))

    def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:BATCH], self.pending[BATCH:]
            self.client.log_batch(self.run_id, metrics=batch)

    def _log_artifacts(self) -> None:
        """The pictures and records at the top, the diagnostics under diagnostics/, best.pt
        under checkpoint/: whichever of them the run wrote."""
        for names, folder in ((PICTURES + RECORDS, None), (DIAGNOSTICS, "diagnostics"), (("best.pt",), "checkpoint")):
            for name in names:
                path = self.run_dir / name
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path), folder)

    def _guarded(self, action: Callable[[], Any]) -> None:
        """Run a logging action; the first failure is reported and stops MLflow logging only."""
        if self.broken:
            return
        try:
            action()
        except Exception as exc:  # a tracking server gone mid-run must not end the training
            self.broken, self.pending = True, []
            self.say(f"mlflow: logging stopped ({type(exc).__name__}: {_first_line(exc)}); training goes on")


def _resumed_run(client: Any, run_dir: Path, uri: str) -> str | None:
    """The MLflow run this run folder already logs to in the same store (a resumed run), if any."""
    import json

    from mlflow.exceptions import MlflowException

    try:
        saved = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("uri") != uri or not saved.get("run_id"):
        return None
    try:
        return str(client.get_run(saved["run_id"]).info.run_id)
    except MlflowException:  # the store was replaced: start a new run
        return None
