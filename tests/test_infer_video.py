"""`dinokit predict clip.mp4`: an annotated video and one JSON line per frame, frames batched; the
clip is encoded here (PyAV, the test extra has it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dinokit.errors import DataError
from tests.cli_helpers import run_cli
from tests.services import extra
from tests.test_api import detector, run  # noqa: F401  (module fixtures: a 2-step tiny model)

av = extra("av")


def write_clip(path, frames: int = 5, size=(64, 48)) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_predict_video_cli(run, tmp_path, capsys):  # noqa: F811
    clip = tmp_path / "clip.mp4"
    write_clip(clip)
    argv = ["predict", str(clip), "--checkpoint", str(run.dir / "best.pt"), "--score", "0", "--batch-size", "2",
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert run_cli(argv) == 0
    assert "5 frame(s)" in capsys.readouterr().out
    lines = [json.loads(x) for x in (tmp_path / "out" / "clip.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 2, 3, 4]
    assert all((x["width"], x["height"]) == (64, 48) and x["detections"] for x in lines)
    assert lines[1]["time"] == pytest.approx(0.1, abs=1e-3)
    with av.open(str(tmp_path / "out" / "clip.mp4")) as container:  # the annotated copy, upscaled to draw
        frames = list(container.decode(video=0))
    assert len(frames) == 5 and frames[0].width == 512


def test_predict_video_api_and_errors(detector, tmp_path):  # noqa: F811
    clip = tmp_path / "c.mp4"
    write_clip(clip, frames=3)
    assert detector.predict_video(clip, tmp_path / "o.mp4", score=0.0, batch_size=8) == 3
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 3
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="cannot read video"):
        detector.predict_video(tmp_path / "bad.mp4", tmp_path / "x.mp4")
