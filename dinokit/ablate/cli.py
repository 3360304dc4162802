"""`dinokit ablate`: what does each DINO component buy on this data?

Thin by design: flags -> arms + base config -> `study.run` -> `report.render`. Every input error
is raised as a `DinokitError` before any training starts (the main CLI prints it as one line).
The main CLI mounts `app` with `app.add_typer(ablate_app, name="ablate")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console

from dinokit.ablate import arms as arms_mod
from dinokit.config import Config
from dinokit.errors import DinokitError, fail
from dinokit.files import command_inputs
from dinokit.studies.shipped import find
from dinokit.studies import launch as launch_mod
from dinokit.studies.names import check_name
from dinokit.studies.trials import study_config, study_logging

if TYPE_CHECKING:  # optuna, pandas and matplotlib load when a command runs: `dinokit --help` stays quick
    import pandas as pd

    from dinokit.ablate.report import ReportData

app = typer.Typer(help="Ablation studio: train arms x seeds under one budget and report the differences.",
                  add_completion=False, pretty_exceptions_enable=False)
console = Console()


def ablation_name(removals: list[str], grid: bool, study: Optional[Path]) -> str:
    """A default name that is the same for the same command, so rerunning it resumes."""
    if study is not None:
        return study.stem
    body = "+".join(removals) if removals else "all"
    return f"grid-{body}" if grid else ("leave-one-out" if not removals else body)


# what a report writes into OUT/ablate/NAME (announced before training: none may be an input)
REPORT_FILES = ("trials.csv", "summary.csv", "report.md", "report.html", "ap.png", "convergence.png",
                "forest.png", "heatmap.png", "gallery.png", "selection.png")
STUDY_SHAPES_VAL = 300  # studies validate on 300 built-in images (the first 100 are the default split)


def base_config(preset: str, data: Optional[str], sets: list[str], steps: Optional[int],
                time_budget: Optional[float], eval_every: Optional[int] = None) -> Config:
    """The study's shared base config (dinokit/studies/trials.py), with step-seeded random
    streams: arms of one seed see the same draws, so they are paired (ablate only). On the
    built-in data the validation split grows to 300 images (less validation-sample noise per
    paired difference) unless `--set data.shapes_val=...` says otherwise."""
    cfg = study_config(preset, data, sets, steps, time_budget, eval_every)
    if cfg.data.data == "shapes" and not any(s.replace(" ", "").startswith("data.shapes_val=") for s in sets):
        cfg.data.shapes_val = STUDY_SHAPES_VAL
    cfg.train.step_seeded = True  # paired seeds: see dinokit/ablate/pairing.py
    return cfg


def budget_text(cfg: Config) -> str:
    t = cfg.train
    if t.steps > 0:
        return f"{t.steps} steps per trial"
    if t.time_budget > 0:
        return f"{t.time_budget:g} min per trial"
    return f"{t.epochs} epochs per trial"


@app.callback(invoke_without_command=True)
def ablate(
    ctx: typer.Context,
    no_cdn: bool = typer.Option(False, "--no-cdn", help="Arm without contrastive denoising (denoising dn)."),
    no_dn: bool = typer.Option(False, "--no-dn", help="Arm without any denoising (denoising none)."),
    no_lft: bool = typer.Option(False, "--no-lft", help="Arm with look-forward-once (lft false)."),
    static_queries: bool = typer.Option(False, "--static-queries", help="Arm with static queries."),
    pure_queries: bool = typer.Option(False, "--pure-queries", help="Arm with pure query selection."),
    grid: bool = typer.Option(False, "--grid", help="Every combination of the named removals."),
    study: Optional[Path] = typer.Option(None, "--study", help="Arms from a YAML file or a shipped study's name "
                                          "(paper_table; see --list-studies)."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per arm (the same seeds for every arm)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimiser steps per trial."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Minutes per trial."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate every N steps, the same "
                                             "marks for every arm (default: steps/10; 100 under a time or "
                                             "epoch budget)."),
    preset: str = typer.Option("tiny", "--preset", help="Base configuration."),
    data: Optional[str] = typer.Option(None, "--data", help="shapes, a dataset folder or a COCO JSON."),
    name: Optional[str] = typer.Option(None, "--name", help="Ablation name (default: from the flags)."),
    storage: Optional[str] = typer.Option(None, "--storage",
                                          help="Optuna RDB URL (default: sqlite in OUT/ablate/NAME)."),
    jobs: int = typer.Option(1, "--jobs", help="Trials trained in parallel processes."),
    out: Path = typer.Option(Path("runs"), "--out", help="Root folder; results go to OUT/ablate/NAME."),
    sets: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable)."),
    precision: Optional[str] = typer.Option(None, "--precision",
                                            help="Every trial's train.precision: fp32, bf16, fp16 (CUDA) or auto."),
    list_studies: bool = typer.Option(False, "--list-studies", help="Print the shipped study names and paths."),
    until_decided: bool = typer.Option(False, "--until-decided", help="Seeds in rounds until every comparison "
                                       "is decided (helps, hurts, or no effect beyond --margin); --seeds is ignored."),
    margin: float = typer.Option(1.0, "--margin", help="Equivalence margin in the measure's COCO points."),
    max_seeds: int = typer.Option(20, "--max-seeds", help="Seed cap of --until-decided."),
    max_hours: Optional[float] = typer.Option(None, "--max-hours", help="Hours of training, summed over the "
                                              "study's trials, after which --until-decided starts no trial."),
    rule_kind: Optional[str] = typer.Option(None, "--rule", help="Decision rule of --until-decided: groupseq "
                                            "(default: group-sequential for the seed cap), tmixture (any number of "
                                            "seeds) or bounded (distribution-free, wide). A study keeps its rule."),
    decide_on: str = typer.Option("AP", "--decide-on", help="Measure of the verdicts: AP, AP50, auc, AP-tail or "
                                  "AP50-tail (mean over the last third of the evaluations)."),
    logger: list[str] = typer.Option([], "--logger", help="Also log every trial to mlflow (one experiment named "
                                     "after the study; extra [mlflow]) or tensorboard; repeatable."),
    mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI (implies --logger "
                                             "mlflow; default $MLFLOW_TRACKING_URI, else sqlite in OUT/ablate/NAME)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Retry trials that failed deterministically "
                                      "(e.g. bad data), once their cause is fixed; transient failures are always retried."),
    launcher: str = launch_mod.LAUNCHER, partition: Optional[str] = launch_mod.PARTITION,
    time_: Optional[str] = launch_mod.TIME, gpus: int = launch_mod.GPUS_PER_TRIAL,
    cpus: Optional[int] = launch_mod.CPUS_PER_TRIAL, mem: Optional[str] = launch_mod.MEM,
    slurm_args: list[str] = launch_mod.SLURM_ARGS, wait: bool = launch_mod.WAIT,
) -> None:
    """Train the full model and the ablated arms on the same data, budget and seeds; report."""
    if ctx.invoked_subcommand is not None:
        return
    if list_studies:
        from dinokit.studies.shipped import listing

        print(listing("ablate"))
        return
    from dinokit.ablate import report as report_mod
    from dinokit.ablate import sequential as sequential_mod
    from dinokit.ablate import study as study_mod
    from dinokit.ablate.decide import Rule
    from dinokit.ablate.steps import comparisons
    from dinokit.infer.precision import set_trial_precision

    flags = {"no-cdn": no_cdn, "no-dn": no_dn, "no-lft": no_lft, "static-queries": static_queries,
             "pure-queries": pure_queries}
    removals = [k for k, v in flags.items() if v]
    if study is not None and (removals or grid):
        raise DinokitError("--study takes the arms from the file: do not combine it with removal flags or --grid")
    if seeds < 1:
        raise DinokitError(f"the grid is empty: --seeds must be at least 1, got {seeds}")
    if jobs < 1:
        raise DinokitError(f"--jobs must be at least 1, got {jobs}")
    if study is not None:
        arm_set = arms_mod.load_study_file(study)
    else:
        arm_set = arms_mod.grid(removals) if grid else arms_mod.leave_one_out(removals)
    name = check_name(name or ablation_name(removals, grid, study))
    rule = Rule(margin, decide_on, tuple(comparisons(arm_set)), max_seeds,
                **({} if rule_kind is None else {"kind": rule_kind}))
    if until_decided:
        sequential_mod.check_rule(rule)
        sequential_mod.check_hours(max_hours)
    cfg = base_config(preset, data, sets, steps, time_budget, eval_every)
    set_trial_precision(cfg, precision)  # passed through to every trial's config
    study_logging(cfg, name, out / "ablate" / name, logger, mlflow_uri)  # MLflow: one experiment, the study's
    meta = {"preset": preset, "data": cfg.data.data, "budget": budget_text(cfg),
            "evaluations": f"every {cfg.train.eval_every_steps} steps"}
    if sets:
        meta["overrides"] = " ".join(sets)
    if until_decided:
        meta.update(sequential=True)  # the rule itself is stored once, by the rounds (ablate/sequential.py)
    n_seeds = sequential_mod.SEED_SPACE if until_decided else seeds
    spec = study_mod.AblationSpec(name, arm_set, [cfg.train.seed + i for i in range(n_seeds)], cfg,
                                  out / "ablate" / name, storage or "", meta, retry_failed=retry_failed)
    command_inputs(None if study is None else find(study, "ablate"), data,
                   outputs={f"--out ({n})": spec.out_dir / n for n in REPORT_FILES})
    launch = launch_mod.Launch(launcher, partition, time_, gpus, cpus, mem, slurm_args, wait).check_storage(spec.storage)
    if until_decided:
        if launch.on_slurm and not launch.wait:
            raise DinokitError("--until-decided with --launcher slurm needs --wait: each round's verdicts "
                               "decide what the next round trains")
        _, reason = sequential_mod.run_until_decided(spec, rule, jobs=jobs, say=_say, launch=launch,
                                                     max_hours=max_hours, kind_given=rule_kind is not None)
        _say(f"stopped: {reason}")
        data_, summary = report_mod.render(spec.storage, name, spec.out_dir, reason=reason)  # the stored rule
        _show(data_, summary, spec.out_dir)
        _tag_verdicts(cfg, data_)
        return
    ledger = study_mod.run(spec, jobs=jobs, say=_say, launch=launch)
    if ledger is None:  # submitted to Slurm; the jobs train
        return
    data_, summary = report_mod.render(spec.storage, name, spec.out_dir)
    _show(data_, summary, spec.out_dir)
    _tag_verdicts(cfg, data_)
    if ledger.live:
        _say(f"{len(ledger.live)} trial(s) still running in other processes: {_pairs(ledger.live)}")
    left = set(spec.pairs) - ledger.done - ledger.live
    if left:
        _say(f"{len(left)} trial(s) not finished: {_pairs(left)}; rerun the same command to retry them.")
        raise typer.Exit(1)


@app.command("report")
def report(
    name: str = typer.Argument(..., help="Ablation name (folder under OUT/ablate)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna RDB URL (default: the run folder's)."),
    out: Path = typer.Option(Path("runs"), "--out", help="Root folder of the runs."),
    margin: Optional[float] = typer.Option(None, "--margin", help="Another margin (COCO points): on a sequential "
                                           "study an exploratory view beside its verdicts; on a fixed-seed study "
                                           "verdicts under the sequential rule."),
    decide_on: Optional[str] = typer.Option(None, "--decide-on", help="Another measure, likewise (see ablate "
                                            "--decide-on)."),
) -> None:
    """Re-render an ablation's report from storage, without training. A sequential study's
    verdicts are always those of the rule it stored."""
    from dinokit.ablate import report as report_mod
    from dinokit.studies.storage import default_storage

    command_inputs()  # reads the study's storage, which no report file can be
    out_dir = out / "ablate" / name
    if storage is None:
        if not (out_dir / "study.db").is_file():
            raise DinokitError(f"no ablation named '{name}': {out_dir / 'study.db'} not found (see --out, --storage)")
        storage = default_storage(out_dir)
    data_, summary = report_mod.render(storage, name, out_dir, explore=(margin, decide_on))
    _show(data_, summary, out_dir)
    if data_.rule:  # verdicts: onto the trials' MLflow runs, where the study logged to MLflow
        from dinokit.ablate.study import read_trials

        _tag_verdicts(read_trials(storage, name)[0].base, data_)


def _say(message: str) -> None:
    console.print(message, highlight=False, markup=False, soft_wrap=True)


def _tag_verdicts(base: Config, data_: ReportData) -> None:
    """The report's verdicts as tags on the trials' MLflow runs (ablate/mlflow_tags.py)."""
    from dinokit.ablate.mlflow_tags import tag_verdicts

    tagged = tag_verdicts(base, data_)
    if tagged:
        _say(f"mlflow: verdicts tagged on {tagged} run(s) of experiment '{base.train.mlflow_experiment}' "
             f"at {base.train.mlflow_uri}")


def _pairs(pairs: set[tuple[str, int]]) -> str:
    names = [f"{a}/s{s}" for a, s in sorted(pairs)]
    return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")


def rich_table(data: ReportData, summary: pd.DataFrame) -> Any:
    """The report's table for the terminal."""
    from rich.table import Table

    from dinokit.ablate.report import completed, display_table

    df = display_table(summary, data.baseline)
    done = len(completed(data.trials))
    table = Table(title=f"ablation {data.name}: {done}/{len(data.arms) * len(data.seeds)} trials "
                        "(AP in COCO points, mean ± std over seeds)")
    for i, col in enumerate(df.columns):
        table.add_column(str(col), justify="left" if i == 0 else "right")
    for row in df.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    return table


def _show(data_: ReportData, summary: pd.DataFrame, out_dir: Path) -> None:
    from dinokit.ablate.report import completed

    wide = console if console.is_terminal else Console(width=160)  # logs: no 80-column wrapping
    wide.print(rich_table(data_, summary))
    for sec in (s for s in data_.sections if s.top):  # the verdicts (and an exploratory view, labelled)
        _say(f"{sec.title}:")
        for row in sec.table.itertuples(index=False):
            _say("  " + " | ".join(str(v) for v in row))
    fails = data_.trials[data_.trials["state"] == "FAIL"] if not data_.trials.empty else data_.trials
    done = completed(data_.trials)
    finished = set(zip(done["arm"], done["seed"])) if len(done) else set()
    for row in fails.itertuples():
        since = "; rerun since, finished" if (row.arm, row.seed) in finished else ""
        _say(f"failed trial {row.trial} ({row.arm} seed {row.seed}): {row.error or 'interrupted'}{since}")
    _say(f"{len(completed(data_.trials))} finished trials; report: {out_dir / 'report.md'} "
         "(also report.html, trials.csv, summary.csv, convergence.png, forest.png, ap.png)")


def main() -> None:
    """Standalone entry (`python -m dinokit.ablate.cli`): input errors are one line, exit 2."""
    try:
        app(prog_name="dinokit ablate")
    except DinokitError as exc:
        fail(exc)


if __name__ == "__main__":
    main()
