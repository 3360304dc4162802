"""Generated from the config dataclasses: every field has a rule, and a value of the wrong type or
outside the rule is refused with one line naming the field, from `--set` (CLI, exit 2) and YAML."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import pytest
import yaml

from dinokit.cli import main
from dinokit.config import SECTIONS, Config, ConfigError, budget_flags, load_preset, load_yaml
from dinokit.config_rules import RULES, Flag, Text

FIELDS = [
    (f"{section}.{f.name}", hint)
    for section in SECTIONS
    for f in dataclasses.fields(getattr(Config(), section))
    for hint in [typing.get_type_hints(type(getattr(Config(), section)))[f.name]]
]


def wrong_type(hint: Any) -> Any:
    """A value of a type the field cannot hold."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return 7
    if origin in (typing.Union, types.UnionType) or hint is str:
        return [1, 2]
    if origin is tuple:
        return "abc"
    if hint is bool:
        return "maybe"
    return "abc" if hint in (int, float) else {"a": 1}


def as_text(value: Any) -> str:
    """The value as `--set` text (YAML flow style: .nan, '', lists)."""
    return yaml.safe_dump([value], default_flow_style=True).strip()[1:-1]


def test_every_field_has_a_rule_and_every_rule_a_field():
    assert sorted(SECTIONS) == sorted(f.name for f in dataclasses.fields(Config))
    names = [name for name, _ in FIELDS]
    missing = [name for name in names if name not in RULES]
    assert not missing, f"add a rule to dinokit/config_rules.py RULES for: {', '.join(missing)}"
    assert sorted(set(RULES) - set(names)) == []


def test_every_rule_but_flags_and_free_text_refuses_something():
    free = [name for name, rule in RULES.items() if not rule.refused() and not isinstance(rule, (Flag, Text))]
    assert free == []


def test_presets_and_defaults_pass_their_rules():
    for preset in ("tiny", "r50-4scale", "r50-5scale"):
        load_preset(preset)


@pytest.mark.parametrize("name,hint", FIELDS, ids=[name for name, _ in FIELDS])
def test_bad_value_is_one_line_exit_2(name, hint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    section, key = name.split(".")
    for value in [wrong_type(hint), *RULES[name].refused()]:
        with pytest.raises(SystemExit) as info:
            main(["train", "--set", f"{name}={as_text(value)}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1, (value, err)
        assert err[0].startswith(f"error: {name} "), (value, err)
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({section: {key: value}}))
        with pytest.raises(ConfigError, match=rf"^{name} "):
            load_yaml(path, load_preset("tiny"))


@pytest.mark.parametrize("argv,message", [
    (["--steps", "0"], "--steps must be positive, got 0"),
    (["--epochs", "0"], "--epochs must be positive, got 0"),
    (["--time-budget", "0"], "--time-budget must be positive"),
    (["--set", "train.lr=-1"], "train.lr must be > 0, got -1.0"),
    (["--batch-size", "-3"], "train.batch_size must be positive, got -3"),
    (["--set", "train.epochs=0", "--set", "train.time_budget=0", "--set", "data.shapes_train=2"], "nothing to train"),
])
def test_budget_and_flag_values(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and message in err[0], err


def test_one_budget_flag_switches_the_others_off():
    assert budget_flags(steps=5) == {"steps": 5, "time_budget": 0.0}
    assert budget_flags(epochs=3) == {"epochs": 3, "steps": 0, "time_budget": 0.0}
    assert budget_flags(time_budget=1) == {"time_budget": 1.0, "steps": 0}
    with pytest.raises(ConfigError, match="--epochs and --steps both set the budget"):
        budget_flags(epochs=1, steps=1)
