"""The report of a `dinokit tune` study, from storage alone: the best configuration as a ready
`--config` YAML, the trials as a table (pandas), parameter importances (optuna.importance) and
the optimisation history and per-trial curves as PNGs. Trials are ranked by their value, the
mean of their last evaluations (`search.rank_value`); every file is written atomically."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from dinokit.config import Config, save_yaml
from dinokit.files import write_text, write_with
from dinokit.tune.search import rank_value
from dinokit.tune.space import apply_values


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per finished or pruned trial, best first: value (the mean of the last evaluations;
    of those reached, for a pruned trial), state, steps reached, params."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        steps = max(t.intermediate_values) if t.intermediate_values else 0
        reached = [v for _, v in sorted(t.intermediate_values.items())]
        value = t.value if t.state == TrialState.COMPLETE else (rank_value(reached) if reached else None)
        rows.append({"trial": t.number, "state": t.state.name, "value": value, "last_step": steps, **t.params})
    table = pd.DataFrame(rows)
    return table.sort_values("value", ascending=False, na_position="last") if not table.empty else table


def importances(study: optuna.Study) -> dict[str, float]:
    """PED-ANOVA importances over the complete trials; empty when there are too few to tell. The
    evaluator is named, not left to optuna: optuna 3.6's default, fANOVA, needs scikit-learn (not a
    dependency), so the lowest allowed optuna failed here (found in the .ci/lowest.txt venv)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # experimental in 3.6
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def _plots(study: optuna.Study, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_intermediate_values, plot_optimization_history

    written = []
    for name, plot in (("history.png", plot_optimization_history), ("curves.png", plot_intermediate_values)):
        try:
            ax = plot(study)
        except (ValueError, RuntimeError):
            continue
        write_with(out_dir / name, lambda tmp: ax.figure.savefig(tmp, dpi=100, bbox_inches="tight"))
        plt.close(ax.figure)
        written.append(name)
    return written


FILES = ("best.yaml", "trials.csv", "history.png", "curves.png", "report.md")  # what render writes


def render(study: optuna.Study, base: Config, out_dir: Path, top: int = 10) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Write best.yaml, trials.csv, history.png, curves.png and report.md into out_dir."""
    import warnings

    out_dir.mkdir(parents=True, exist_ok=True)
    table = trials_table(study)
    write_with(out_dir / "trials.csv", lambda tmp: table.to_csv(tmp, index=False))
    summary: dict[str, Any] = {"trials": len(table), "importances": {}}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    lines = [f"# tune {study.study_name}", ""]
    if complete:
        best = max(complete, key=lambda t: t.value)
        write_with(out_dir / "best.yaml", lambda tmp: save_yaml(apply_values(base, best.params), tmp))
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params)
        lines += [f"Best: trial {best.number}, value {best.value:.4f} (mean of its last evaluations); "
                  "config: `best.yaml` "
                  f"(train with `dinokit train --config {out_dir / 'best.yaml'}`)", ""]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary["importances"] = importances(study)
        summary["plots"] = _plots(study, out_dir)
    shown = table.head(top).to_string(index=False) if not table.empty else "(none)"
    lines += ["## Top trials", "", "```", shown, "```", ""]
    if summary["importances"]:
        lines += ["## Parameter importances", ""]
        lines += [f"- {k}: {v:.3f}" for k, v in summary["importances"].items()] + [""]
    lines += [f"![{p}]({p})" for p in summary["plots"]]
    write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return table, summary
