"""The one YAML reader behind config, study, search-space and YOLO dataset files."""

from __future__ import annotations

from pathlib import Path

import pytest

from dinokit.config import ConfigError
from dinokit.errors import DataError
from dinokit.yamlfile import read_mapping


def test_each_failure_is_one_line_of_the_callers_class(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^YOLO dataset file not found: .*nope\.yaml$"):
        read_mapping(tmp_path / "nope.yaml", "YOLO dataset file", DataError)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match=r"^config file .*bad\.yaml is not valid YAML: ") as exc:
        read_mapping(bad, "config file", ConfigError)
    assert "\n" not in str(exc.value)
    seq = tmp_path / "seq.yaml"
    seq.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="seq.yaml must be a mapping with an 'arms' list$"):
        read_mapping(seq, "study file", ConfigError, "a mapping with an 'arms' list")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_mapping(binary, "config file", ConfigError)


def test_empty_file_is_empty_only_where_allowed(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_mapping(empty, "config file", ConfigError, empty_ok=True) == {}
    with pytest.raises(ConfigError, match="must be a mapping"):
        read_mapping(empty, "study file", ConfigError)
    ok = tmp_path / "ok.yaml"
    ok.write_text("train: {lr: 0.001}\n")
    assert read_mapping(ok, "config file", ConfigError) == {"train": {"lr": 0.001}}
