"""Search spaces for `dinokit tune`, read from YAML (shipped ones: `dinokit tune --list-spaces`):

    description: what is searched
    metric: AP50            # AP50 (default) or AP: reported at every evaluation, maximised
    pruner: median          # median (default) or hyperband
    prune_after: 200        # median pruner: no trial is stopped before this step (early AP50 is noise)
    params:
      train.lr: {low: 1e-4, high: 2e-3, log: true}     # a float range (log scale)
      train.warmup_steps: {low: 0, high: 200}          # integers when both ends are integers
      model.query_groups: {choices: [1, 3]}            # a categorical choice

Every parameter is a config field (section.field); each value the space can produce is checked
against the config before any training, so a bad file fails with one line.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from dinokit.config import Config, ConfigError, apply_dict
from dinokit.studies.shipped import find
from dinokit.yamlfile import read_mapping

METRICS = ("AP50", "AP")
PRUNERS = ("median", "hyperband")


class SpaceError(ConfigError):
    """A search-space file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Param:
    name: str  # section.field
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}

    def suggest(self, trial: Any) -> Any:
        """The trial's value (optuna.Trial: suggest_categorical / suggest_int / suggest_float)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    metric: str = "AP50"
    pruner: str = "median"
    description: str = ""
    prune_after: int = 0  # steps before which the median pruner stops no trial

    def to_dict(self) -> dict[str, Any]:
        out = {"description": self.description, "metric": self.metric, "pruner": self.pruner,
               "params": {p.name: p.to_dict() for p in self.params}}
        if self.prune_after:  # only when set, so studies stored before the key still resume
            out["prune_after"] = self.prune_after
        return out


def _number(where: str, value: Any) -> float | int:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpaceError(f"{where} must be a number, got '{value}'")
    return value


def _param(where: str, name: str, raw: Any) -> Param:
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: give {{low: ..., high: ...}} or {{choices: [...]}}")
    unknown = set(raw) - {"low", "high", "log", "choices"}
    if unknown:
        raise SpaceError(f"{where}: unknown key '{sorted(unknown)[0]}' (low, high, log, choices)")
    if "choices" in raw:
        if set(raw) - {"choices"}:
            raise SpaceError(f"{where}: choices cannot be combined with low/high/log")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: choices must be a non-empty list")
        return Param(name, choices=tuple(choices))
    if "low" not in raw or "high" not in raw:
        raise SpaceError(f"{where}: a range needs both low and high")
    low, high = _number(f"{where} low", raw["low"]), _number(f"{where} high", raw["high"])
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: log must be true or false")
    if low >= high:
        raise SpaceError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log range needs low > 0, got {low}")
    return Param(name, low, high, log)


def parse_space(raw: Any, where: str) -> SearchSpace:
    if not isinstance(raw, dict):
        raise SpaceError(f"{where} must hold a mapping with 'params'")
    unknown = set(raw) - {"description", "metric", "pruner", "prune_after", "params"}
    if unknown:
        raise SpaceError(f"{where}: unknown key '{sorted(unknown)[0]}' "
                         "(description, metric, pruner, prune_after, params)")
    metric, pruner = raw.get("metric", "AP50"), raw.get("pruner", "median")
    if metric not in METRICS:
        raise SpaceError(f"{where}: metric must be one of {', '.join(METRICS)}, got '{metric}'")
    if pruner not in PRUNERS:
        raise SpaceError(f"{where}: pruner must be one of {', '.join(PRUNERS)}, got '{pruner}'")
    prune_after = raw.get("prune_after", 0)
    if isinstance(prune_after, bool) or not isinstance(prune_after, int) or prune_after < 0:
        raise SpaceError(f"{where}: prune_after must be a whole number of steps >= 0, got '{prune_after}'")
    if prune_after and pruner != "median":
        raise SpaceError(f"{where}: prune_after applies to the median pruner only")
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise SpaceError(f"{where}: 'params' must map at least one section.field to a range or choices")
    out = tuple(_param(f"{where}: {name}", str(name), value) for name, value in params.items())
    return SearchSpace(out, metric, pruner, str(raw.get("description", "")), prune_after)


def load_space(path: str | Path) -> SearchSpace:
    """Read and check a search-space file (a path, or a shipped space's name such as `tune_tiny`)."""
    path = find(path, "tune", SpaceError)
    return parse_space(read_mapping(path, "search space file", SpaceError, "a mapping with 'params'"), str(path))


def apply_values(base: Config, values: dict[str, Any]) -> Config:
    """A copy of `base` with the trial's values (section.field -> value) applied and validated."""
    cfg = copy.deepcopy(base)
    nested: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        section, _, field = name.partition(".")
        nested.setdefault(section, {})[field] = value
    return apply_dict(cfg, nested)


def check_space(space: SearchSpace, base: Config) -> None:
    """Every name is a config field and the ends of every range / every choice are valid values."""
    for p in space.params:
        if p.name.count(".") != 1:
            raise SpaceError(f"search space parameter '{p.name}' must be section.field (e.g. train.lr)")
        samples = list(p.choices) if p.choices is not None else [p.low, p.high]
        for value in samples:
            try:
                apply_values(base, {p.name: value})
            except ConfigError as exc:
                raise SpaceError(f"search space parameter {p.name}: {exc}") from None
