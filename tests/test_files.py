"""dinokit.files: the one atomic writer."""

import json
import math

import pytest

from dinokit import files


def test_write_text_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    files.write_text(path, "one")
    files.write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_error_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    files.write_json(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with files.atomic_open(path) as handle:
            handle.write('{"v": 2, "half')
            raise RuntimeError("crash mid-write")
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_json_has_no_nan(tmp_path):
    import numpy as np

    path = files.write_json(tmp_path / "m.json", {"ap": math.nan, "inf": float("inf"),
                                                   "arr": np.array([1.0, np.nan]), "n": np.float32(0.5)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"ap": None, "inf": None, "arr": [1.0, None], "n": 0.5}


def test_write_with_keeps_the_suffix_for_format_sniffing(tmp_path):
    seen = []
    files.write_with(tmp_path / "plot.png", lambda tmp: (seen.append(tmp.suffix), tmp.write_bytes(b"x")))
    assert seen == [".png"] and (tmp_path / "plot.png").read_bytes() == b"x"


def test_same_file(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"1")
    assert files.same_file(tmp_path / "a.jpg", tmp_path / "." / "a.jpg")
    assert not files.same_file(tmp_path / "a.jpg", tmp_path / "b.jpg")


def test_outputs_get_the_mode_open_would_give(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        fresh = files.write_text(tmp_path / "new.txt", "x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # not mkstemp's 0600
        kept = tmp_path / "kept.txt"
        kept.write_text("x")
        kept.chmod(0o640)
        files.write_text(kept, "y")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640  # a rewrite keeps the file's mode
    finally:
        os.umask(old)
