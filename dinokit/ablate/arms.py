"""The arms of an ablation: which model variants are compared.

An arm is a name plus ModelConfig overrides applied on top of the base configuration (preset,
`--data`, `--set`). Arms come from removal flags (leave-one-out or a full grid) or from a YAML
study file (shipped ones: `dinokit ablate --list-studies`), whose `base:` settings every arm
shares (the paper-faithful studies pin the paper's focal loss there, whatever the preset trains
with). The question a study asks is its `kind`: each arm against the baseline (`baseline`, the
default, and always for removal flags: "what does removing this component cost?"), or, only when a
study file declares `kind: steps`, each arm against the arm above it ("what does each step add?").
Everything here is validated before any training starts, so a typo in a study file costs
a one-line error, not an hour of training.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from dinokit.config import Config, ConfigError, apply_dict, plain
from dinokit.studies.names import NAME_RULE, valid_name
from dinokit.studies.shipped import find
from dinokit.yamlfile import read_mapping

FULL = "full"
BASELINE, STEPS = "baseline", "steps"  # what a study compares: each arm with the baseline, or each step
KINDS = (BASELINE, STEPS)


@dataclass(frozen=True)
class Removal:
    """One component the CLI can take out: its flag and the ModelConfig change that removes it."""

    name: str  # arm name, also the flag without dashes
    field: str  # ModelConfig field it changes
    value: Any  # value meaning "component removed"
    description: str


# Order is the order arms appear in reports.
REMOVALS: tuple[Removal, ...] = (
    Removal("no-cdn", "denoising", "dn", "no contrastive negatives: DN-DETR denoising"),
    Removal("no-dn", "denoising", "none", "no denoising queries at all"),
    Removal("no-lft", "lft", False, "look forward once: each layer refines a detached box"),
    Removal("static-queries", "queries", "static", "no query selection: learned anchors and content"),
    Removal("pure-queries", "queries", "pure", "pure query selection: content from the encoder too"),
)
REMOVAL_BY_NAME = {r.name: r for r in REMOVALS}

_STUDY_KEYS = {"description", "baseline", "base", "arms", "kind"}
_SECTIONS = ("loss", "train", "data")  # besides `model`: sections an arm may change, stored as "section.field"
# the images every arm trains and is scored on: the study's (--data, --set), never an arm's
_STUDY_DATA = {"data.data", "data.shapes_train", "data.shapes_val", "data.shapes_size", "data.shapes_seed"}
_ARM_KEYS = {"name", "model", "description", *_SECTIONS}


@dataclass(frozen=True)
class Arm:
    """A variant: `overrides` are ModelConfig fields ("queries") or other sections' fields
    ("loss.cls") set on top of the base config."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "overrides": dict(self.overrides), "description": self.description}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Arm":
        return cls(raw["name"], dict(raw.get("overrides", {})), raw.get("description", ""))


@dataclass(frozen=True)
class ArmSet:
    """The arms of one ablation, the arm every other one is compared with, and the question:
    `kind` baseline (each arm against the baseline) or steps (each arm against the one above)."""

    arms: tuple[Arm, ...]
    baseline: str = FULL
    description: str = ""
    kind: str = BASELINE

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.arms]

    def get(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)


def _removals(names: list[str]) -> list[Removal]:
    unknown = [n for n in names if n not in REMOVAL_BY_NAME]
    if unknown:
        raise ConfigError(f"unknown component removal '{unknown[0]}' (choose from {', '.join(REMOVAL_BY_NAME)})")
    picked = [r for r in REMOVALS if r.name in names]  # canonical order, duplicates dropped
    return picked or list(REMOVALS)


def leave_one_out(removals: list[str]) -> ArmSet:
    """The full model plus one arm per removal; an empty list means every component."""
    arms = [Arm(FULL, {}, "every component")]
    for r in _removals(removals):
        arms.append(Arm(r.name, {r.field: r.value}, r.description))
    return validate_arms(ArmSet(tuple(arms), FULL))


def grid(removals: list[str]) -> ArmSet:
    """Every combination of the named removals (2^k arms for k switches of distinct fields).

    Removals of the same field are alternatives, not combinable (`--no-cdn --no-dn` gives
    denoising in {cdn, dn, none}), so the grid is the product over fields of (default + removals).
    """
    by_field: dict[str, list[Removal | None]] = {}
    for r in _removals(removals):
        by_field.setdefault(r.field, [None]).append(r)
    arms = []
    for combo in itertools.product(*by_field.values()):
        chosen = [r for r in combo if r is not None]
        name = "+".join(r.name for r in chosen) or FULL
        overrides = {r.field: r.value for r in chosen}
        arms.append(Arm(name, overrides, "; ".join(r.description for r in chosen) or "every component"))
    return validate_arms(ArmSet(tuple(arms), FULL))


def load_study_file(path: str | Path) -> ArmSet:
    """Arms from a YAML study file (a path, or the name of a shipped one such as `paper_table`:
    dinokit/studies/shipped.py); unknown keys, fields or switch values are errors."""
    path = find(path, "ablate", ConfigError)
    raw = read_mapping(path, "study file", ConfigError, "a mapping with an 'arms' list")
    unknown = sorted(set(raw) - _STUDY_KEYS)
    if unknown:
        raise ConfigError(f"study file {path}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(_STUDY_KEYS))})")
    items = raw.get("arms")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"study file {path}: 'arms' must be a non-empty list (the grid would be empty)")
    shared = raw.get("base") or {}
    if not isinstance(shared, dict) or set(shared) - {"model", *_SECTIONS}:
        raise ConfigError(f"study file {path}: 'base' must be a mapping of sections (model, {', '.join(_SECTIONS)})")
    shared_overrides = _section_overrides(shared, f"study file {path}: base")
    arms, own = [], []
    for i, item in enumerate(items):
        where = f"study file {path}: arm {i + 1}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a mapping with 'name' and 'model'")
        bad = sorted(set(item) - _ARM_KEYS)
        if bad:
            raise ConfigError(f"{where}: unknown key '{bad[0]}' (allowed: {', '.join(sorted(_ARM_KEYS))})")
        if "name" not in item:
            raise ConfigError(f"{where}: missing 'name'")
        overrides = _section_overrides(item, where)
        own.append(bool(overrides))
        arms.append(Arm(str(item["name"]), {**shared_overrides, **overrides}, str(item.get("description", ""))))
    kind = raw.get("kind", BASELINE)
    if kind not in KINDS:
        raise ConfigError(f"study file {path}: kind must be one of {', '.join(KINDS)}, got '{kind}'")
    if kind == STEPS and len(arms) < 2:
        raise ConfigError(f"study file {path}: kind steps needs two arms or more (each is compared with the one above)")
    baseline = raw.get("baseline")
    if baseline is None:
        plain = [a.name for a, changed in zip(arms, own) if not changed]
        baseline = plain[0] if plain else arms[0].name
    try:
        return validate_arms(ArmSet(tuple(arms), str(baseline), str(raw.get("description", "")), kind))
    except ConfigError as exc:
        raise ConfigError(f"study file {path}: {exc}") from None


def _section_overrides(item: dict[str, Any], where: str) -> dict[str, Any]:
    """An arm's (or the study base's) `model:` / `loss:` / `train:` mappings as override keys."""
    overrides: dict[str, Any] = {}
    for section in ("model", *_SECTIONS):
        values = item.get(section) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: '{section}' must be a mapping of {section.capitalize()}Config fields")
        overrides.update({(k if section == "model" else f"{section}.{k}"): v for k, v in values.items()})
    fixed = sorted(_STUDY_DATA & set(overrides))
    if fixed:
        raise ConfigError(f"{where}: {fixed[0]} is the study's data (give it with --data or --set), not an arm's")
    return overrides


def validate_arms(arm_set: ArmSet, base: Config | None = None) -> ArmSet:
    """Names usable as folder names and unique; overrides valid ModelConfig values; no twins."""
    if not arm_set.arms:
        raise ConfigError("no arms to compare: the grid is empty")
    seen: dict[str, str] = {}
    for arm in arm_set.arms:
        if not valid_name(arm.name):
            raise ConfigError(f"arm name '{arm.name}' {NAME_RULE}")
        if arm.name in seen:
            raise ConfigError(f"arm name '{arm.name}' is used twice")
        try:
            cfg = arm_config(base or Config(), arm)
        except ConfigError as exc:
            raise ConfigError(f"arm '{arm.name}': {exc}") from None
        key = repr(sorted(plain({k: v for k, v in cfg.to_dict().items() if k in ("model", *_SECTIONS)}).items()))
        if key in seen.values():
            twin = next(n for n, k in seen.items() if k == key)
            raise ConfigError(f"arms '{twin}' and '{arm.name}' have identical model settings")
        seen[arm.name] = key
    if arm_set.baseline not in seen:
        raise ConfigError(f"baseline '{arm_set.baseline}' is not one of the arms ({', '.join(seen)})")
    return arm_set


def arm_config(base: Config, arm: Arm) -> Config:
    """A copy of `base` with the arm's overrides applied (and validated)."""
    cfg = Config.from_dict(base.to_dict())
    changes: dict[str, dict[str, Any]] = {"model": {}}
    for key, value in arm.overrides.items():
        section, _, name = key.rpartition(".")
        changes.setdefault(section or "model", {})[name] = value
    apply_dict(cfg, changes)
    return cfg


def setting(cfg: Config, key: str) -> Any:
    """The value of an override key ("queries" or "loss.cls") in a config."""
    section, _, name = key.rpartition(".")
    return getattr(getattr(cfg, section or "model"), name)

