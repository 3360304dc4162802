"""`dinokit tune`: flags -> search space + base config -> search.run -> report.render.
Every input error is a DinokitError raised before any training (the main CLI prints one line)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dinokit.errors import DinokitError
from dinokit.studies import launch as launch_mod
from dinokit.studies.names import check_name
from dinokit.studies.trials import study_config, study_logging

console = Console()


def tune(
    space: Optional[Path] = typer.Option(None, "--space", help="Search space: a YAML file or a shipped space's "
                                         "name (tune_tiny; see --list-spaces)."),
    trials: int = typer.Option(20, "--trials", help="Finished or pruned trials the study should hold."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimiser steps per trial."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Minutes per trial."),
    preset: str = typer.Option("tiny", "--preset", help="Base configuration."),
    data: Optional[str] = typer.Option(None, "--data", help="shapes, a dataset folder or a COCO JSON."),
    name: Optional[str] = typer.Option(None, "--name", help="Study name (default: the space file's name)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna RDB URL (default: sqlite in OUT/tune/NAME)."),
    jobs: int = typer.Option(1, "--jobs", help="Trials trained in parallel processes."),
    seed: int = typer.Option(0, "--seed", help="TPE sampler seed."),
    out: Path = typer.Option(Path("runs"), "--out", help="Root folder; results go to OUT/tune/NAME."),
    sets: list[str] = typer.Option([], "--set", help="Config override key=value for every trial (repeatable)."),
    precision: Optional[str] = typer.Option(None, "--precision",
                                            help="Every trial's train.precision: fp32, bf16, fp16 (CUDA) or auto."),
    list_spaces: bool = typer.Option(False, "--list-spaces", help="Print the shipped search spaces' names and paths."),
    logger: list[str] = typer.Option([], "--logger", help="Also log every trial to mlflow (one experiment named "
                                     "after the study; extra [mlflow]) or tensorboard; repeatable."),
    mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI (implies --logger "
                                             "mlflow; default $MLFLOW_TRACKING_URI, else sqlite in OUT/tune/NAME)."),
    launcher: str = launch_mod.LAUNCHER, partition: Optional[str] = launch_mod.PARTITION,
    time_: Optional[str] = launch_mod.TIME, gpus: int = launch_mod.GPUS_PER_TRIAL,
    cpus: Optional[int] = launch_mod.CPUS_PER_TRIAL, mem: Optional[str] = launch_mod.MEM,
    slurm_args: list[str] = launch_mod.SLURM_ARGS, wait: bool = launch_mod.WAIT,
) -> None:
    """Search hyperparameters with Optuna TPE and pruning; each trial is a training run."""
    from dinokit.files import command_inputs
    from dinokit.studies.shipped import find, listing

    if list_spaces:
        print(listing("tune"))
        return
    if space is None:
        raise DinokitError("--space is required: a search-space YAML file or a shipped name (see --list-spaces)")
    from dinokit.infer.precision import set_trial_precision
    from dinokit.tune import report as report_mod
    from dinokit.tune import search
    from dinokit.tune.space import load_space

    search_space = load_space(space)
    name = check_name(name or space.stem)
    cfg = set_trial_precision(study_config(preset, data, sets, steps, time_budget), precision)
    study_logging(cfg, name, out / "tune" / name, logger, mlflow_uri)  # MLflow: one experiment, the study's
    spec = search.TuneSpec(name, search_space, cfg, out / "tune" / name, trials, storage or "", seed)
    command_inputs(find(space, "tune"), data, outputs={f"--out ({n})": spec.out_dir / n for n in report_mod.FILES})
    launch = launch_mod.Launch(launcher, partition, time_, gpus, cpus, mem, slurm_args, wait).check_storage(spec.storage)
    study = search.run(spec, jobs=jobs, say=lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True),
                       launch=launch)
    if study is None:  # submitted to Slurm; the jobs train
        return
    table, summary = report_mod.render(study, cfg, spec.out_dir)
    if not table.empty:
        console.print(table.head(10).to_string(index=False), highlight=False, markup=False)
    if summary["importances"]:
        console.print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importances"].items()),
                      highlight=False, markup=False)
    console.print(f"report: {spec.out_dir / 'report.md'} (best.yaml, trials.csv, history.png, curves.png)",
                  highlight=False, markup=False, soft_wrap=True)
    if search.finished(study) < trials:
        raise DinokitError(f"only {search.finished(study)} of {trials} trials finished; rerun the same command to continue")
