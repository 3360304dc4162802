"""The API and the CLI mean the same: `dinokit.train(steps=N)` and `dinokit train --steps N` build
the same configuration for every budget flag; `--set` overrides are merged before they are
validated (their order does not matter); a run name finds the same folder on --resume."""

from __future__ import annotations

import pytest

import dinokit
from dinokit.config import ConfigError, apply_overrides, load_preset
from dinokit.training import trainer as trainer_mod
from dinokit.training.trainer import TrainResult
from tests.cli_helpers import run_cli


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Replace the training loop by a recorder of the configuration it was given."""
    configs = []

    def fake_train(cfg, *, resume=False, progress=True, **kwargs):
        configs.append(cfg)
        return TrainResult(tmp_path / "runs" / "train" / "x", {"AP": 0.0, "AP50": 0.0, "step": 0}, [], 0)

    monkeypatch.setattr(trainer_mod, "train", fake_train)
    return configs


@pytest.mark.parametrize("flag, field, value", [
    ("--steps", "steps", 200), ("--epochs", "epochs", 3), ("--time-budget", "time_budget", 2.5),
])
def test_every_budget_flag_gives_the_same_config_from_the_api_and_the_cli(captured, flag, field, value):
    assert run_cli(["train", flag, str(value)]) == 0
    dinokit.train(**{field: value})
    cli, api = captured
    assert cli.to_dict() == api.to_dict()
    t = api.train
    assert getattr(t, field) == value
    # the flag is the budget: the preset's others are off (its 9-minute clock included)
    assert (t.time_budget == 0) == (field != "time_budget") and (t.steps == 0) == (field != "steps")

def test_the_api_refuses_two_budgets_as_the_cli_does(captured):
    with pytest.raises(ConfigError, match="choose one budget"):
        dinokit.train(steps=10, epochs=2)
    assert run_cli(["train", "--steps", "10", "--epochs", "2"]) == 2


@pytest.mark.parametrize("order", [0, 1])
def test_overrides_are_merged_before_validation(order):
    items = ["model.nheads=6", "model.hidden_dim=96"]
    cfg = apply_overrides(load_preset("tiny"), items if order == 0 else items[::-1])
    assert (cfg.model.nheads, cfg.model.hidden_dim) == (6, 96)
    with pytest.raises(ConfigError, match="divisible"):  # the merged result is still validated
        apply_overrides(load_preset("tiny"), ["model.nheads=7", "model.hidden_dim=96"])


def test_fields_and_overrides_are_validated_together(captured):
    dinokit.train(steps=1, hidden_dim=42, overrides=["model.nheads=6"])  # 42 % 4 (tiny's heads) != 0: alone it fails
    assert (captured[0].model.hidden_dim, captured[0].model.nheads) == (42, 6)


def test_resume_finds_a_run_by_the_name_it_was_given(captured, tmp_path):
    run = tmp_path / "runs" / "train" / "my-run"  # `--name "my run"` trains into my-run
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"")
    (run / "config.yaml").write_text("train: {steps: 7}\n")
    assert run_cli(["train", "--resume", "--name", "my run", "--out", str(tmp_path / "runs")]) == 0
    dinokit.train(resume=True, name="my run", out=str(tmp_path / "runs"))
    assert [c.train.name for c in captured] == ["my-run", "my-run"]
    assert captured[0].train.steps == 7
