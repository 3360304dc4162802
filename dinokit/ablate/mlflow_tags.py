"""A study's verdicts as tags on its trials' MLflow runs, set each time the report is rendered.

The trials log into one experiment named after the study (studies/trials.py `study_logging`),
each run tagged with its arm and seed; the verdicts exist only once a report decides them, so
they are added here, afterwards: every run gets a `verdict` tag naming each comparison its arm
takes part in, with that comparison's verdict as the report's Verdicts table words it, and the
experiment gets all of them in one `verdicts` tag.
"""

from __future__ import annotations

from typing import Any

from dinokit.ablate.steps import comparisons
from dinokit.config import Config

TAG_LIMIT = 5000  # characters: MLflow's limit on a tag value


def verdicts_by_comparison(data: Any) -> dict[str, str]:
    """{comparison: verdict} from a rendered report's Verdicts section (ReportData.sections);
    empty when the report has none (no margin given, nothing decided)."""
    for section in getattr(data, "sections", []):
        if section.title == "Verdicts" and section.table is not None and len(section.table):
            return dict(zip(section.table["comparison"].astype(str), section.table["verdict"].astype(str)))
    return {}


def arm_verdicts(data: Any, verdicts: dict[str, str]) -> dict[str, str]:
    """{arm: "comparison: verdict; ..."} for every comparison an arm takes part in (either side)."""
    out: dict[str, list[str]] = {}
    for name, arm, reference in comparisons(data.arm_set):
        if name in verdicts:
            for side in (arm, reference):
                out.setdefault(side, []).append(f"{name}: {verdicts[name]}")
    return {arm: "; ".join(texts)[:TAG_LIMIT] for arm, texts in out.items()}


def tag_verdicts(base: Config, data: Any) -> int:
    """Tag the study's MLflow runs with the report's verdicts; returns how many runs were tagged
    (0 when MLflow is off for the study or the report has no verdicts)."""
    verdicts = verdicts_by_comparison(data)
    if not base.train.mlflow or not verdicts or data.arm_set is None:
        return 0
    from dinokit.training.mlflow_log import open_experiment

    client, experiment = open_experiment(base.train.mlflow_uri, base.train.mlflow_experiment or data.name)
    by_arm = arm_verdicts(data, verdicts)
    client.set_experiment_tag(experiment, "verdicts", "; ".join(f"{k}: {v}" for k, v in verdicts.items())[:TAG_LIMIT])
    tagged, token = 0, None
    while True:
        page = client.search_runs([experiment], max_results=1000, page_token=token)
        for run in page:
            arm = run.data.tags.get("arm")
            if arm in by_arm and run.data.tags.get("study") == data.name:
                client.set_tag(run.info.run_id, "verdict", by_arm[arm])
                tagged += 1
        token = page.token
        if not token:
            return tagged
