"""A run's labels (`train.tags`): the preset a config started from, a study trial's study, arm
and seed; given tags add to them; they travel in config.yaml and the checkpoint."""

from __future__ import annotations

import pytest

from dinokit.api import train_config
from dinokit.config import ConfigError, apply_overrides, load_preset
from dinokit.studies.trials import label_trial, study_config


def test_a_preset_names_itself_and_given_tags_add_to_it():
    assert load_preset("r50-4scale").train.tags == {"preset": "r50-4scale"}
    cfg = apply_overrides(load_preset("tiny"), ["train.tags={team: vision, run: 'baseline 2'}"])
    assert cfg.train.tags == {"preset": "tiny", "team": "vision", "run": "baseline 2"}
    cfg = train_config(None, None, None, False, ["train.tags={team: vision}"], {"steps": 5})
    assert cfg.train.tags == {"preset": "tiny", "team": "vision"}  # the default preset is named too


@pytest.mark.parametrize("text,message", [
    ("train.tags={seed: 3}", "values must be text"),
    ("train.tags=[a, b]", "must be a mapping of names to text"),
    ("train.tags={'a=b': x}", "names must be 1-250 letters"),
])
def test_bad_tags_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(load_preset("tiny"), [text])


def test_a_trial_is_labelled_without_touching_the_base():
    base = study_config("tiny", None, [], 10, None)
    trial = label_trial(study_config("tiny", None, [], 10, None), "cdn", arm="no-cdn", seed=43, trial=5)
    assert trial.train.tags == {"preset": "tiny", "study": "cdn", "arm": "no-cdn", "seed": "43", "trial": "5"}
    assert base.train.tags == {"preset": "tiny"}
