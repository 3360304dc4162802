"""Config: presets, YAML, overrides and the messages bad values get."""

import pytest

from dinokit.config import Config, ConfigError, apply_overrides, load_preset, load_yaml, save_yaml


def test_overrides_parse_numbers_bools_and_choices():
    cfg = apply_overrides(load_preset("tiny"), ["train.lr=1e-3", "model.lft=false", "model.queries=pure", "model.hidden_dim=96"])
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.model.lft is False
    assert cfg.model.queries == "pure" and cfg.model.hidden_dim == 96


@pytest.mark.parametrize("item,message", [
    ("model.queries=fancy", "model.queries must be one of"),
    ("model.hidden_dim=abc", "model.hidden_dim must be an integer"),
    ("model.hidden_dim=30", "divisible by model.nheads"),
    ("model.nope=1", "unknown option 'model.nope'"),
    ("nope.x=1", "unknown config section"),
    ("model.lft=maybe", "model.lft must be true or false"),
    ("hidden_dim=3", "section.field"),
    ("train.lr=fast", "train.lr must be a number"),
])
def test_bad_overrides_name_the_field(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(load_preset("tiny"), [item])


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_preset("huge")


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(load_preset("tiny"), ["model.dn_draws=2", "data.image_size=96"])
    save_yaml(cfg, tmp_path / "c.yaml")
    back = load_yaml(tmp_path / "c.yaml", Config())
    assert back.to_dict() == cfg.to_dict()
    (tmp_path / "bad.yaml").write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
