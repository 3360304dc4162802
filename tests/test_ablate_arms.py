"""Arm generation: leave-one-out, grids, study files and their validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from dinokit.ablate.arms import FULL, grid, leave_one_out, load_study_file
from dinokit.config import ConfigError
from dinokit.studies.shipped import shipped


def test_leave_one_out_single_flag_is_full_plus_one_arm() -> None:
    arms = leave_one_out(["no-cdn"])
    assert arms.names == [FULL, "no-cdn"]
    assert arms.get("no-cdn").overrides == {"denoising": "dn"}
    assert arms.get(FULL).overrides == {}
    assert arms.baseline == FULL


def test_leave_one_out_without_flags_removes_every_component() -> None:
    arms = leave_one_out([])
    assert arms.names == [FULL, "no-cdn", "no-dn", "no-lft", "static-queries", "pure-queries"]
    assert arms.get("no-dn").overrides == {"denoising": "none"}
    assert arms.get("no-lft").overrides == {"lft": False}
    assert arms.get("static-queries").overrides == {"queries": "static"}
    assert arms.get("pure-queries").overrides == {"queries": "pure"}


def test_leave_one_out_order_is_canonical_and_duplicates_dropped() -> None:
    assert leave_one_out(["no-lft", "no-cdn", "no-lft"]).names == [FULL, "no-cdn", "no-lft"]


@pytest.mark.parametrize("flags", [["no-cdn"], ["no-cdn", "no-lft"], ["no-cdn", "no-lft", "static-queries"]])
def test_grid_of_k_independent_switches_has_2_to_the_k_arms(flags: list[str]) -> None:
    arms = grid(flags)
    assert len(arms.arms) == 2 ** len(flags)
    settings = {tuple(sorted(a.overrides.items())) for a in arms.arms}
    assert len(settings) == 2 ** len(flags)  # every combination exactly once
    assert arms.get(FULL).overrides == {}
    combined = "+".join(flags)
    assert arms.get(combined).overrides == {
        {"no-cdn": "denoising", "no-lft": "lft", "static-queries": "queries"}[f]: v
        for f, v in zip(flags, ["dn", False, "static"])
    }


def test_grid_removals_of_one_field_are_alternatives() -> None:
    arms = grid(["no-cdn", "no-dn"])  # denoising in {cdn, dn, none}, never both at once
    assert sorted(a.overrides.get("denoising", "cdn") for a in arms.arms) == ["cdn", "dn", "none"]
    assert len(grid([]).arms) == 3 * 2 * 3  # denoising x lft x queries


def test_unknown_removal_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown component removal 'no-foo'"):
        leave_one_out(["no-foo"])


def test_shipped_paper_table_is_the_cumulative_table() -> None:
    arms = load_study_file("paper_table")
    assert len(arms.arms) == 6
    first, last = arms.arms[0], arms.arms[-1]
    # every arm trains with the paper's focal loss (the study's base), whatever the preset uses
    assert first.overrides == {"loss.cls": "focal", "queries": "static", "denoising": "none", "lft": False}
    assert arms.arms[1].overrides == {"loss.cls": "focal", "queries": "static", "denoising": "dn", "lft": False}  # DN-DETR
    assert last.overrides == {"loss.cls": "focal", "queries": "mixed", "denoising": "cdn", "lft": True}  # = full DINO
    assert arms.baseline == last.name
    steps = [a.overrides for a in arms.arms]
    for before, after in zip(steps, steps[1:]):  # each row changes what the next component adds
        assert sum(before[k] != after[k] for k in before) == 1


def test_shipped_seed_variants_change_one_switch_each() -> None:
    arms = load_study_file("seed_variants")
    assert arms.baseline == "defaults" and arms.get("defaults").overrides == {"loss.cls": "focal"}
    others = [a.overrides for a in arms.arms if a.name != "defaults"]
    focal = {"loss.cls": "focal"}
    assert others == [{**focal, "dn_draws": 2}, {**focal, "neg_target": "closest-gt"}, {**focal, "attention": "dense"}]


def _study(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("arms: []\n", "non-empty list"),
        ("- a\n- b\n", "must be a mapping"),
        ("arms: [{name: a, model: {}}]\nseeds: 3\n", "unknown key 'seeds'"),
        ("arms: [{name: a, modle: {}}]\n", "unknown key 'modle'"),
        ("arms: [{model: {lft: false}}]\n", "missing 'name'"),
        ("arms: [{name: a, model: {denoising: cdn2}}]\n", "model.denoising must be one of cdn, dn, none"),
        ("arms: [{name: a, model: {lft: maybe}}]\n", "model.lft must be true or false"),
        ("arms: [{name: a, model: {dn_draws: 3}}]\n", "dn_draws must be 1 or 2"),
        ("arms: [{name: a, model: {no_such_switch: 1}}]\n", "unknown option 'model.no_such_switch'"),
        ("arms: [{name: a}, {name: a, model: {lft: false}}]\n", "used twice"),
        ("arms: [{name: a}, {name: b, model: {lft: true}}]\n", "identical model settings"),
        ("arms: [{name: 'a b'}]\n", "may only use"),
        ("baseline: zz\narms: [{name: a}]\n", "baseline 'zz' is not one of the arms"),
        ("arms: [{name: a, model: [1]}]\n", "must be a mapping of ModelConfig fields"),
        ("arms: {name: a\n", "not valid YAML"),
    ],
)
def test_invalid_study_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_study_file(_study(tmp_path, text))
    assert "\n" not in str(info.value)
    assert "study" in str(info.value)


def test_missing_study_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="study file not found"):
        load_study_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="study file not found"):
        load_study_file("no_such_study")


def test_shipped_study_files_by_name() -> None:
    assert load_study_file("paper_table").baseline == "dino"
    assert load_study_file("seed_variants.yaml").baseline == "defaults"


def test_study_file_baseline_defaults_to_the_arm_without_overrides(tmp_path: Path) -> None:
    arms = load_study_file(_study(tmp_path, "arms: [{name: x, model: {lft: false}}, {name: plain}]\n"))
    assert arms.baseline == "plain"


def test_arms_may_change_other_sections(tmp_path: Path) -> None:
    from dinokit.ablate.arms import arm_config, setting
    from dinokit.config import Config

    arms = load_study_file(_study(tmp_path, "arms: [{name: a}, {name: b, train: {lr: 0.001}}]\n"))
    assert arms.get("b").overrides == {"train.lr": 0.001}
    cfg = arm_config(Config(), arms.get("b"))
    assert cfg.train.lr == 0.001 and setting(cfg, "train.lr") == 0.001 and setting(cfg, "lft") is True
    with pytest.raises(ConfigError, match="unknown option 'train.no_such'"):
        load_study_file(_study(tmp_path, "arms: [{name: a}, {name: b, train: {no_such: 1}}]\n"))


def test_shipped_successors_compare_dino_with_one_aid_each() -> None:
    import yaml

    raw = yaml.safe_load(shipped("ablate")["successors"].read_text())
    assert raw["baseline"] == "dino" and raw["arms"][0] == {"name": "dino", "description": raw["arms"][0]["description"],
                                                             "model": {}}
    losses = [a["loss"]["cls"] for a in raw["arms"] if "loss" in a]
    assert losses == ["vfl", "ia-bce", "mal"]
    assert all(len(a.get("model") or a.get("loss")) >= 1 for a in raw["arms"][1:])
    arms = load_study_file("successors")
    assert arms.get("vfl").overrides == {"loss.cls": "vfl"}
    assert arms.get("query-groups").overrides == {"loss.cls": "focal", "query_groups": 3}
    assert arms.get("dino").overrides == {"loss.cls": "focal"}  # the paper's DINO, whatever the preset's loss


def test_study_base_is_shared_by_every_arm_and_an_arm_overrides_it(tmp_path: Path) -> None:
    from dinokit.ablate.arms import arm_config
    from dinokit.config import load_preset

    arms = load_study_file(_study(tmp_path, "base: {loss: {cls: focal}, model: {lft: false}}\n"
                                            "arms: [{name: a, model: {}}, {name: b, loss: {cls: vfl}}]\n"))
    assert arms.get("a").overrides == {"loss.cls": "focal", "lft": False}
    assert arms.get("b").overrides == {"loss.cls": "vfl", "lft": False}
    assert arms.baseline == "a"  # the arm with no settings of its own, as without a base
    preset = load_preset("tiny")
    preset.loss.cls = "mal"
    assert arm_config(preset, arms.get("a")).loss.cls == "focal"  # the study wins over the preset
    for body, message in [("base: [1]\narms: [{name: a}]\n", "'base' must be a mapping"),
                          ("base: {optim: {}}\narms: [{name: a}]\n", "'base' must be a mapping"),
                          ("base: {loss: {cls: dice}}\narms: [{name: a}]\n", "loss.cls must be one of")]:
        with pytest.raises(ConfigError, match=message):
            load_study_file(_study(tmp_path, body))
