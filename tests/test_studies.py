"""dinokit/studies/: what ablate and tune share (one name rule, one base config, one trainer
factory) and the study files and search spaces shipped inside the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from dinokit.ablate.arms import load_study_file
from dinokit.config import ConfigError
from dinokit.errors import DinokitError
from dinokit.studies.names import check_name, valid_name
from dinokit.studies.shipped import find, home, listing, shipped
from dinokit.studies.trials import DEFAULT_TRAINER, load_trainer, study_config
from dinokit.tune.space import SpaceError, load_space
from tests.cli_helpers import run_cli


@pytest.mark.parametrize("command", [["ablate", "--no-cdn"], ["tune", "--space", "tune_tiny"]])
def test_ablate_and_tune_refuse_a_bad_name_with_the_same_line(command: list[str], tmp_path: Path, capsys) -> None:
    code = run_cli([*command, "--steps", "2", "--name", "my run", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: --name 'my run' may only use letters, digits and . _ + -\n"
    assert not (tmp_path / "ablate").exists() and not (tmp_path / "tune").exists()


def test_name_rule() -> None:
    assert valid_name("paper-2.b+x") and not valid_name("a/b") and not valid_name(".hidden")
    assert check_name("ok_1") == "ok_1"
    with pytest.raises(DinokitError, match="--study-name 'a b'"):
        check_name("a b", "--study-name")


def test_study_config_is_shared_and_not_step_seeded() -> None:
    cfg = study_config("tiny", "shapes", ["train.lr=0.001"], 40, None)
    assert (cfg.train.steps, cfg.train.eval_every_steps, cfg.train.lr) == (40, 4, 0.001)  # ten evaluations
    assert cfg.train.step_seeded is False  # only ablate pairs its arms this way
    assert study_config("tiny", None, [], None, 2.0).train.eval_every_steps == 100  # time budget: every 100
    with pytest.raises(DinokitError, match="--eval-every must be a positive"):
        study_config("tiny", None, [], 40, None, eval_every=0)
    from dinokit.training.trainer import train

    assert load_trainer(DEFAULT_TRAINER) is train and load_trainer(len) is len


ROOT = Path(__file__).resolve().parents[1]


def test_studies_and_spaces_have_one_home_in_ablations(tmp_path: Path, monkeypatch) -> None:
    """In a clone (and an editable install) the shipped files are the repository's ablations/;
    a wheel holds the same files as dinokit/ablations/ (.ci/wheel_check.sh runs them from one)."""
    monkeypatch.chdir(tmp_path)  # found by name from any folder, not from the clone's
    assert home() == ROOT / "ablations"
    assert list(shipped("ablate")) == ["paper_table", "seed_variants", "successors", "successors_2026"]
    assert list(shipped("tune")) == ["tune_tiny", "tune_tiny_recipe"]
    for kind, folder in (("ablate", "studies"), ("tune", "spaces")):
        for path in shipped(kind).values():
            assert path.parent == ROOT / "ablations" / folder and path.is_file()
    assert len(load_study_file("paper_table").arms) == 6 and load_study_file("successors.yaml").baseline == "dino"
    assert load_space("tune_tiny").params and find("seed_variants", "ablate") == shipped("ablate")["seed_variants"]
    # one copy: no second set of these files anywhere in the repository
    for name in ("paper_table.yaml", "tune_tiny.yaml"):
        copies = [p for p in ROOT.rglob(name)  # not in venvs, build or run folders
                  if not any(part.startswith(".") or part in ("build", "dist", "runs") for part in p.relative_to(ROOT).parts)]
        assert len(copies) == 1 and copies[0].parent.parent == ROOT / "ablations", copies


def test_a_file_of_that_name_wins_and_a_missing_name_lists_what_ships(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("paper_table.yaml").write_text("arms: [{name: a}, {name: b, model: {lft: false}}]\n")
    assert [a.name for a in load_study_file("paper_table.yaml").arms] == ["a", "b"]
    with pytest.raises(ConfigError, match=r"study file not found: nope \(shipped: paper_table, seed_variants, "
                                          r"successors, successors_2026; see dinokit ablate --list-studies\)"):
        load_study_file("nope")
    with pytest.raises(SpaceError, match="search space file not found: sub/tune_tiny.yaml"):
        load_space("sub/tune_tiny.yaml")  # a path with a folder is a path, never a shipped name


def test_list_studies_and_list_spaces(capsys) -> None:
    assert run_cli(["ablate", "--list-studies"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(shipped("ablate"))
    assert all(Path(line.split(maxsplit=1)[1]).is_file() for line in lines)
    assert run_cli(["tune", "--list-spaces"]) == 0
    assert capsys.readouterr().out == listing("tune") + "\n" and "tune_tiny_recipe" in listing("tune")
    assert run_cli(["tune", "--steps", "2"]) == 2
    assert "--space is required" in capsys.readouterr().err
