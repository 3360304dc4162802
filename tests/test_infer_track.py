"""Tracking on video (dinokit.infer.track: roboflow's `trackers` ByteTrack): ids stay with their
objects through a synthetic clip whose true tracks are known, through a short occlusion and two
objects crossing, on detections made from the truth with the noise a detector adds (jittered
boxes, scores that dip, missed frames); then `dinokit predict clip.mp4 --track` and
`Detector.track` end to end with a tiny model on a clip of moving shapes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dinokit.infer.detections import Detections
from tests.cli_helpers import run_cli
from tests.services import extra
from tests.test_api import detector, run  # noqa: F401  (module fixtures: a 2-step tiny model)

def _extra(module: str, extra_name: str) -> Any:
    """The optional package (the [test] extra holds it), or the services rule: skip with the
    reason, fail where DINOKIT_REQUIRE_EXTRAS=1 (CI)."""
    return extra(module, extra_name)


_extra("trackers", "track")
from dinokit.infer.track import ByteTracker  # noqa: E402

WIDTH, HEIGHT, FPS, FRAMES = 640, 480, 30, 90
HIDDEN = range(40, 48)  # object 0 is hidden behind object 1 for these 8 frames (0.27 s)
# Id switches allowed over the 10 clips (60 objects, ~5,300 object-frames). Measured with trackers
# 2.6.1: 2, the crossing of seed 1, where the crossing object takes the hidden one's id for one frame.
SWITCH_BOUND = 3


def true_tracks(rng: np.random.Generator) -> np.ndarray:
    """(FRAMES, K, 4) xyxy boxes of K = 6 objects: 0 and 1 cross each other (0 hidden while they
    overlap, frames HIDDEN), the others move at constant velocity and bounce off the borders."""
    t = np.arange(FRAMES, dtype=np.float64)[:, None]
    boxes = []
    # 0 runs right, 1 runs left along nearly the same line; they meet at frame ~44
    for x_start, speed, y in ((120.0, 4.0, 200.0), (470.0, -4.0, 206.0)):
        x = x_start + speed * t
        boxes.append(np.concatenate([x - 20, y - 20 + 0 * t, x + 20, y + 20 + 0 * t], axis=1))
    for _ in range(4):
        side = rng.uniform(30, 60)
        pos = np.array([rng.uniform(side, WIDTH - side), rng.uniform(side, HEIGHT - side)])
        vel = rng.uniform(-5, 5, 2)
        track = []
        for _ in range(FRAMES):
            track.append([*(pos - side / 2), *(pos + side / 2)])
            pos = pos + vel
            for axis, limit in ((0, WIDTH), (1, HEIGHT)):
                if not side / 2 <= pos[axis] <= limit - side / 2:
                    vel[axis] = -vel[axis]
                    pos[axis] = np.clip(pos[axis], side / 2, limit - side / 2)
        boxes.append(np.array(track))
    return np.stack(boxes, axis=1)


def noisy_detections(truth: np.ndarray, rng: np.random.Generator) -> list[tuple[Detections, list[int]]]:
    """Per frame: Detections of the visible objects (corners jittered by 1.5 px, scores 0.5-0.95,
    one box in ten dipping to 0.15-0.45, one in thirty missed; object 0 absent in HIDDEN), plus
    the true object of each row."""
    frames = []
    for f, boxes in enumerate(truth):
        rows = [k for k in range(len(boxes)) if not (k == 0 and f in HIDDEN) and rng.random() > 1 / 30]
        xyxy = boxes[rows] + rng.normal(0, 1.5, (len(rows), 4))
        scores = rng.uniform(0.5, 0.95, len(rows))
        dips = rng.random(len(rows)) < 0.1
        scores[dips] = rng.uniform(0.15, 0.45, int(dips.sum()))
        det = Detections(xyxy=xyxy.astype(np.float32), scores=scores.astype(np.float32),
                         class_ids=np.zeros(len(rows), dtype=np.int64), names=["shape"] * len(rows),
                         image_size=(HEIGHT, WIDTH), source=f"frame{f}")
        frames.append((det, rows))
    return frames


def id_switches(assigned: dict[int, list[int]]) -> int:
    """CLEAR-MOT id switches: the times an object's id differs from the id it had when last tracked."""
    switches = 0
    for ids in assigned.values():
        known = [i for i in ids if i >= 0]
        switches += sum(a != b for a, b in zip(known, known[1:]))
    return switches


def run_tracker(seed: int) -> dict[int, list[int]]:
    """Object -> its track id in each frame where it was output (-1: on no track)."""
    rng = np.random.default_rng(seed)
    tracker = ByteTracker(score=0.5, frame_rate=FPS)
    assigned: dict[int, list[int]] = {}
    for det, rows in noisy_detections(true_tracks(rng), rng):
        out = tracker.update(det)
        assert out.track_ids is not None and len(out.track_ids) == len(out)
        where = {tuple(box): k for box, k in zip(det.xyxy.tolist(), rows)}  # output rows are input rows
        for box, track in zip(out.xyxy.tolist(), out.track_ids.tolist()):
            assigned.setdefault(where[tuple(box)], []).append(track)
    return assigned


def test_ids_stay_with_their_objects():
    # 10 clips x 6 objects x 90 frames; in each, two objects cross and one is hidden for 8 frames.
    switches, stray = 0, 0
    for seed in range(10):
        assigned = run_tracker(seed)
        assert len(assigned) == 6
        switches += id_switches(assigned)
        main = {}
        for obj, ids in assigned.items():
            known = [i for i in ids if i >= 0]
            assert len(known) >= 0.9 * len(ids), (seed, obj)  # tracked, the object's first frame aside
            main[obj] = max(set(known), key=known.count)
            stray += sum(i != main[obj] for i in known)
        assert len(set(main.values())) == 6, seed  # one track per object
    assert switches <= SWITCH_BOUND and stray <= SWITCH_BOUND, (switches, stray)


def test_the_hidden_object_keeps_its_id_after_the_occlusion():
    for seed in range(10):
        ids = run_tracker(seed)[0]
        after = [i for i in ids[HIDDEN.start:] if i >= 0]  # object 0 is absent from its list while hidden
        before = [i for i in ids[:HIDDEN.start] if i >= 0]
        assert len(after) > 30 and set(after) == set(before) and len(set(before)) == 1, (seed, ids)


def frame(boxes: list[list[float]], scores: list[float], labels: list[int] | None = None) -> Detections:
    labels = labels if labels is not None else [0] * len(scores)
    return Detections(xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4), scores=np.array(scores, np.float32),
                      class_ids=np.array(labels, np.int64), names=[f"c{k}" for k in labels], image_size=(100, 100),
                      source="f")


def test_a_low_score_box_keeps_its_track_but_does_not_start_one():
    tracker = ByteTracker(score=0.5, frame_rate=FPS)
    first = tracker.update(frame([[10, 10, 30, 30], [60, 60, 80, 80]], [0.9, 0.3]))
    assert first.track_ids.tolist() == [-1] and first.xyxy.tolist() == [[10, 10, 30, 30]]  # the 0.3 box: dropped
    second = tracker.update(frame([[11, 10, 31, 30], [60, 60, 80, 80]], [0.9, 0.3]))
    assert second.track_ids.tolist() == [1]  # confirmed on its second frame; the low box starts nothing
    dipped = tracker.update(frame([[12, 10, 32, 30]], [0.2]))  # below the threshold, but on the track
    assert dipped.track_ids.tolist() == [1] and dipped.scores.tolist() == [pytest.approx(0.2)]
    record = dipped.to_dict()["detections"][0]
    assert record["track_id"] == 1 and dipped.to_pandas()["track_id"].tolist() == [1]
    assert dipped.to_supervision().tracker_id.tolist() == [1]
    assert first.to_dict()["detections"][0]["track_id"] is None  # JSON null: not on a track yet


def test_near_duplicate_boxes_of_one_object_make_one_track():
    # A DETR-style model can give one object a few near-identical boxes, even of different classes:
    # without the NMS before the tracker each would start a track of its own.
    tracker = ByteTracker(score=0.5, frame_rate=FPS)
    for f in range(4):
        boxes = [[10 + f, 10, 30 + f, 30], [11 + f, 10, 31 + f, 31], [10 + f, 11, 30 + f, 30], [60, 60, 80, 80]]
        out = tracker.update(frame(boxes, [0.9, 0.8, 0.7, 0.6], labels=[0, 0, 1, 1]))
    assert out.track_ids.tolist() == [1, 2] and out.xyxy.tolist() == [[13, 10, 33, 30], [60, 60, 80, 80]]
    # two objects overlapping less than DUPLICATE_IOU (here 0.43) are two tracks
    apart = ByteTracker(score=0.5, frame_rate=FPS)
    for _ in range(3):
        out = apart.update(frame([[10, 10, 30, 30], [18, 10, 38, 30]], [0.9, 0.8]))
    assert out.track_ids.tolist() == [1, 2]


# --------------------------------------------------------------------------- end to end


def write_moving_shapes(path, frames: int = 12, size=(96, 64)) -> None:
    """A clip of two shapes gliding 1 px a frame over a still background."""
    av = _extra("av", "video")
    rng = np.random.default_rng(0)
    background = Image.fromarray(rng.integers(60, 120, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for f in range(frames):
            image = background.copy()
            draw = ImageDraw.Draw(image)
            draw.ellipse([10 + f, 10, 34 + f, 34], fill=(240, 200, 40))
            draw.rectangle([60 - f, 30, 84 - f, 54], fill=(40, 200, 240))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_predict_track_on_the_command_line(run, tmp_path):  # noqa: F811
    clip = tmp_path / "shapes.mp4"
    write_moving_shapes(clip)
    scores = np.concatenate([d.scores for d in run.detector("cpu").predict(
        [f.copy() for f in _frames(clip)], score=0.0)])
    threshold = float(np.quantile(scores, 0.9))  # the 2-step model's ten percent best boxes start tracks
    argv = ["predict", str(clip), "--checkpoint", str(run.dir / "best.pt"), "--track", "--score", f"{threshold:.4f}",
            "--out", str(tmp_path / "out"), "--device", "cpu", "--batch-size", "5"]
    assert run_cli(argv) == 0
    lines = [json.loads(x) for x in (tmp_path / "out" / "shapes.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(12))
    records = [d for x in lines for d in x["detections"]]
    assert records and all("track_id" in d for d in records)
    ids = [d["track_id"] for d in records if d["track_id"] is not None]
    assert ids and all(isinstance(i, int) and i >= 1 for i in ids)
    # The 2-step model's boxes sit at a few places and flicker around the threshold: an id comes back
    # whenever its box does (within the 1-second buffer), and never lands on a box somewhere else.
    for track in set(ids):
        boxes = np.array([d["box"] for d in records if d["track_id"] == track])  # (n, 4) xyxy
        assert np.abs(boxes - boxes[0]).max() <= 12, (track, boxes)  # the shapes move 1 px a frame
    assert max(ids.count(i) for i in set(ids)) >= 3
    assert all(d["score"] >= threshold for x in lines[:1] for d in x["detections"])  # frame 0: no track yet
    with _extra("av", "video").open(str(tmp_path / "out" / "shapes.mp4")) as container:
        drawn = [f.to_image() for f in container.decode(video=0)]
    assert len(drawn) == 12 and drawn[0].width == 512


def _frames(clip) -> list[Image.Image]:
    av = _extra("av", "video")
    with av.open(str(clip)) as container:
        return [f.to_image().convert("RGB") for f in container.decode(video=0)]


def test_detector_track_yields_frames_with_ids(detector, tmp_path):  # noqa: F811
    clip = tmp_path / "c.mp4"
    write_moving_shapes(clip, frames=6)
    frames = list(detector.track(clip, score=0.0, batch_size=4))
    assert len(frames) == 6 and [f.source for f in frames] == [f"{clip}#{i}" for i in range(6)]
    assert all(f.track_ids is not None and len(f.track_ids) == len(f) for f in frames)
    assert (frames[0].track_ids == -1).all() and (frames[1].track_ids >= 1).any()  # confirmed on the 2nd frame
    assert frames[2].plot().size == (512, 341)  # drawn, upscaled for legibility
    sliced = list(detector.track(clip, score=0.0, batch_size=4, slice=32))  # 4 x 3 tiles of 32 px per frame
    assert len(sliced) == 6 and all(f.track_ids is not None for f in sliced)
    boxes = np.concatenate([f.xyxy for f in sliced])  # (N, 4) xyxy in the 96 x 64 frame's pixels
    assert len(boxes) and (boxes >= 0).all() and (boxes[:, [0, 2]] <= 96).all() and (boxes[:, [1, 3]] <= 64).all()


def test_track_without_a_video_is_a_one_line_error(run, tmp_path, capsys):  # noqa: F811
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    assert run_cli(["predict", str(image), "--track", "--checkpoint", str(run.dir / "best.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --track follows objects through a video") and err.count("\n") == 1
