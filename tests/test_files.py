"""dinokit.files: the one atomic writer."""

import json
import math
import os

import pytest

from dinokit import files
from dinokit.errors import DataError


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


def test_the_writer_refuses_an_input_by_any_name(tmp_path):
    """Inside `reading`, no writer replaces the input: by its path, another spelling of it, a
    symlink to it or a hard link to it; the input stays byte-identical and no temp file is left."""
    photo = tmp_path / "in" / "a.jpg"
    photo.parent.mkdir()
    photo.write_bytes(b"the user's photo")
    (tmp_path / "link.jpg").symlink_to(photo)
    os.link(photo, tmp_path / "hard.jpg")
    spellings = [photo, tmp_path / "in" / ".." / "in" / "a.jpg", tmp_path / "link.jpg", tmp_path / "hard.jpg"]
    with files.reading(str(photo)):
        for target in spellings:
            with pytest.raises(DataError, match=r"would overwrite the input .*a\.jpg"):
                files.write_bytes(target, b"an annotated copy")
        with pytest.raises(DataError):
            files.write_with(photo, lambda tmp: tmp.write_bytes(b"x"))
        files.write_text(tmp_path / "in" / "b.json", "{}")  # another file in the same folder is fine
    assert photo.read_bytes() == b"the user's photo"
    assert sorted(p.name for p in photo.parent.iterdir()) == ["a.jpg", "b.json"]
    files.write_bytes(tmp_path / "hard.jpg", b"replaced")  # outside the block the guard is gone
    assert photo.read_bytes() == b"the user's photo"  # (a rename replaces the link, not the data)


def test_an_announced_output_is_refused_when_the_input_is_declared(tmp_path):
    """An output announced first is refused the moment a reader declares it as an input (as the
    dataset resolver does), before anything is written."""
    ann = tmp_path / "ann.json"
    ann.write_text('{"images": []}')
    with files.reading(outputs={"--json": ann}):
        with pytest.raises(DataError, match=r"--json .*ann\.json would overwrite the input"):
            files.declare_inputs(iter([tmp_path / "img.png", ann]))
    assert ann.read_text() == '{"images": []}'


def test_inputs_are_read_lazily(tmp_path):
    """A long list of inputs (a dataset's images) is not walked while outputs are new files."""
    walked = []

    def images():
        walked.append(True)
        yield tmp_path / "x.png"

    with files.reading(images()):
        files.write_text(tmp_path / "new.txt", "x")
        assert walked == []
        files.write_text(tmp_path / "new.txt", "y")  # an existing target: now the inputs are looked at
        assert walked == [True]


def test_a_command_that_writes_before_declaring_its_inputs_is_a_bug(tmp_path):
    with files.command_scope():
        with pytest.raises(files.UndeclaredInputs, match="command_inputs"):
            files.write_text(tmp_path / "out.txt", "x")
        files.command_inputs(tmp_path / "in.txt")
        files.write_text(tmp_path / "out.txt", "x")
    assert not (tmp_path / "in.txt").exists() and (tmp_path / "out.txt").read_text() == "x"


def test_same_file_is_gone():
    """The guard compares devices and inodes; the old helper was only used by its test."""
    assert not hasattr(files, "same_file")


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
