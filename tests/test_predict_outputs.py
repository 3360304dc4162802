"""`dinokit predict` never writes onto a file it reads: an output path that resolves to an input
(an image, a video, the detections JSON) is refused with one line before anything is written,
and every output appears whole (written to a temporary file, then renamed), or not at all."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from dinokit.errors import DinokitError
from tests.cli_helpers import run_cli
from tests.services import extra
from tests.test_api import detector, run  # noqa: F401  (module fixtures: a 2-step tiny model)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def photos(folder, names=("a.png", "b.jpg")) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(folder / name)
    return {name: digest(folder / name) for name in names}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_predict_into_the_input_folder_is_refused_and_the_photos_stay(run, tmp_path, capsys):  # noqa: F811
    before = photos(tmp_path / "photos")
    argv = ["predict", str(tmp_path / "photos"), "--checkpoint", str(run.dir / "best.pt"), "--out",
            str(tmp_path / "photos"), "--device", "cpu", "--score", "0"]
    assert run_cli(argv) == 2
    err = one_error_line(capsys)
    assert err.startswith("error: ") and "a.png" in err and "--out" in err
    assert {p.name: digest(p) for p in (tmp_path / "photos").iterdir()} == before  # nothing new, nothing changed
    # the same folder reached through another spelling of the path
    argv[argv.index("--out") + 1] = str(tmp_path / "photos" / ".." / "photos")
    assert run_cli(argv) == 2
    assert {p.name: digest(p) for p in (tmp_path / "photos").iterdir()} == before


def test_predict_json_onto_an_input_is_refused(run, tmp_path, capsys):  # noqa: F811
    before = photos(tmp_path / "p")
    argv = ["predict", str(tmp_path / "p" / "a.png"), "--checkpoint", str(run.dir / "best.pt"), "--out",
            str(tmp_path / "out"), "--json", str(tmp_path / "p" / "a.png"), "--device", "cpu"]
    assert run_cli(argv) == 2
    assert "--json" in one_error_line(capsys)
    assert digest(tmp_path / "p" / "a.png") == before["a.png"]


def test_predict_elsewhere_leaves_no_temporary_file(run, tmp_path):  # noqa: F811
    photos(tmp_path / "photos")
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "photos"), "--checkpoint", str(run.dir / "best.pt"), "--out", str(out),
            "--device", "cpu", "--score", "0"]
    assert run_cli(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg", "detections.json"]


def test_one_naming_rule_for_images_and_videos(tmp_path):
    """Every input writes OUT/<stem><suffix>, numbered when one of its names is taken: two
    `clip.mp4` from two folders, two `a.png`, `A.png` and `a.png` (one file on a case-insensitive
    disk); a video's .mp4 and .jsonl keep one stem."""
    from dinokit.infer.outputs import output_paths

    videos, images = output_paths(["x/clip.mp4", "y/clip.mp4", "z/a.mov"],
                                  ["p/a.png", "q/a.png", "q/A.PNG", "r/clip.gif", "s/clip.jpg"], tmp_path)
    assert [(v.name, j.name) for v, j in videos] == [("clip.mp4", "clip.jsonl"), ("clip_2.mp4", "clip_2.jsonl"),
                                                     ("a.mp4", "a.jsonl")]
    assert [i.name for i in images] == ["a.png", "a_2.png", "A_3.png", "clip.png", "clip.jpg"]


av = extra("av")


def test_two_videos_with_one_name_write_two_outputs(run, tmp_path, capsys):  # noqa: F811
    """Videos from two folders with the same file name: neither replaces the other's outputs."""
    from tests.test_infer_video import write_clip

    for folder, frames in (("a", 2), ("b", 3)):
        (tmp_path / folder).mkdir()
        write_clip(tmp_path / folder / "clip.mp4", frames=frames)
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.mp4"), "--checkpoint",
            str(run.dir / "best.pt"), "--out", str(out), "--device", "cpu", "--score", "0"]
    assert run_cli(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.jsonl", "clip.mp4", "clip_2.jsonl", "clip_2.mp4"]
    assert [len((out / n).read_text().splitlines()) for n in ("clip.jsonl", "clip_2.jsonl")] == [2, 3]
    assert "clip_2.mp4" in capsys.readouterr().out


def test_predict_video_onto_itself_is_refused(run, tmp_path, capsys):  # noqa: F811
    from tests.test_infer_video import write_clip

    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=3)
    before = digest(clip)
    argv = ["predict", str(clip), "--checkpoint", str(run.dir / "best.pt"), "--out", str(tmp_path), "--device", "cpu"]
    assert run_cli(argv) == 2
    assert "clip.mp4" in one_error_line(capsys)
    assert digest(clip) == before and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_predict_video_api_onto_itself_is_refused(detector, tmp_path):  # noqa: F811
    from tests.test_infer_video import write_clip

    clip = tmp_path / "c.mp4"
    write_clip(clip, frames=3)
    before = digest(clip)
    with pytest.raises(DinokitError, match="c.mp4"):
        detector.predict_video(clip, tmp_path / "." / "c.mp4")
    assert digest(clip) == before


def test_video_failing_midway_closes_the_writer_and_leaves_no_output(detector, tmp_path, monkeypatch):  # noqa: F811
    """A prediction error after the first batch: no half-written video or JSON lines, no temp file,
    and the previous outputs intact."""
    from dinokit.infer import video as video_mod
    from tests.test_infer_video import write_clip

    clip = tmp_path / "in" / "c.mp4"
    clip.parent.mkdir()
    write_clip(clip, frames=5)
    out = tmp_path / "out"
    out.mkdir()
    (out / "o.mp4").write_bytes(b"previous video")
    (out / "o.jsonl").write_text("previous lines\n")
    closed = []
    real_close = video_mod._Writer.close

    def close(self):
        closed.append(True)
        return real_close(self)

    monkeypatch.setattr(video_mod._Writer, "close", close)
    calls = []

    def predict(frames):
        calls.append(len(frames))
        if len(calls) == 2:
            raise RuntimeError("model failed")
        return detector.predict(frames, 0.0)

    with pytest.raises(RuntimeError, match="model failed"):
        video_mod.predict_video(clip, predict, out / "o.mp4", out / "o.jsonl", batch_size=2)
    assert closed == [True]
    assert (out / "o.mp4").read_bytes() == b"previous video"
    assert (out / "o.jsonl").read_text() == "previous lines\n"
    assert sorted(p.name for p in out.iterdir()) == ["o.jsonl", "o.mp4"]
