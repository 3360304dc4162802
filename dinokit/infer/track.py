"""Track ids on video: ByteTrack (roboflow's `trackers`, extra `[track]`) over the predictor's
per-frame detections.

ByteTrack associates the confident boxes with the tracks first (IoU against each track's Kalman
prediction), then the low-scoring boxes with the tracks left over, which keeps an object's id
through frames where its score dips (partly hidden, blurred). So the predictor runs at a low
score floor (`LOW_SCORE`, ByteTrack's 0.1) and every box goes to the tracker; a box is kept in
the output when it is on a track or scores at least the user's threshold, which also starts new
tracks. A track lost for `LOST_SECONDS` ends. An object's first frame carries no id yet
(track id -1): ByteTrack confirms a track on its second matched frame.

A DETR-style detector can return a few near-identical boxes for one object (a briefly trained one
often does: four per shape on the demo clip of the README), and each would start a track of its
own. So a frame's boxes first go through class-agnostic NMS at IoU `DUPLICATE_IOU` (ByteTrack's
own pipeline runs YOLOX's NMS at 0.7); the tracker is class-agnostic too.

Ids are renumbered 1, 2, ... in order of appearance, per video.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from dinokit.errors import DinokitError
from dinokit.infer.detections import Detections

LOW_SCORE = 0.1  # the predictor's floor while tracking: ByteTrack's second association uses these
LOST_SECONDS = 1.0  # a track without a matching box for this long is ended
DUPLICATE_IOU = 0.7  # boxes of one frame overlapping more than this are one object: the best is kept
PredictAt = Callable[[list[Image.Image], float], list[Detections]]  # (frames, score floor) -> one each


class ByteTracker:
    """ByteTrack over `Detections`, one frame at a time: `update` returns the frame's detections
    with `track_ids` set ((N,) int64, -1 for a box not on a confirmed track)."""

    def __init__(self, score: float, frame_rate: float, low_score: float = LOW_SCORE,
                 lost_seconds: float = LOST_SECONDS, duplicate_iou: float = DUPLICATE_IOU) -> None:
        trackers = require_trackers()
        self.score = score
        self.low_score = min(low_score, score)
        self.duplicate_iou = duplicate_iou
        self._tracker = trackers.ByteTrackTracker(
            lost_track_buffer=max(1, round(30 * lost_seconds)),  # counted in frames at 30 fps, then scaled
            frame_rate=frame_rate,
            track_activation_threshold=score,
            high_conf_det_threshold=score,
        )
        self._ids: dict[int, int] = {}  # the library's id -> ours (1, 2, ... in order of appearance)

    def update(self, det: Detections) -> Detections:
        """This frame's boxes that are on a track or score >= `score`, in their input order."""
        import supervision as sv
        import torch
        from torchvision.ops import nms

        xyxy = det.xyxy.reshape(-1, 4)  # (N, 4) xyxy pixels
        single = nms(torch.from_numpy(xyxy).float(), torch.from_numpy(det.scores).float(), self.duplicate_iou)
        single = np.sort(single.numpy())  # (M,) rows kept, near-duplicates of a better box dropped
        boxes = sv.Detections(
            xyxy=xyxy[single].astype(np.float64), confidence=det.scores[single].astype(np.float64),
            class_id=det.class_ids[single].astype(int), data={"row": single},
        )
        tracked = self._tracker.update(boxes)  # a subset of `boxes`, reordered, with tracker_id
        rows, ids = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if len(tracked):
            rows = np.asarray(tracked.data["row"], dtype=np.int64)
            ids = np.asarray(tracked.tracker_id, dtype=np.int64)
        keep = (ids >= 0) | (det.scores[rows] >= self.score)
        rows, ids = rows[keep], ids[keep]
        order = np.argsort(rows, kind="stable")
        rows, ids = rows[order], np.array([self._our_id(i) for i in ids[order].tolist()], dtype=np.int64)
        return dataclasses.replace(
            det, xyxy=det.xyxy[rows], scores=det.scores[rows], class_ids=det.class_ids[rows],
            names=[det.names[r] for r in rows.tolist()], track_ids=ids,
        )

    def _our_id(self, library_id: int) -> int:
        if library_id < 0:
            return -1
        return self._ids.setdefault(library_id, len(self._ids) + 1)


def tracked(predict_at: PredictAt, tracker: ByteTracker) -> Callable[[list[Image.Image]], list[Detections]]:
    """A predict function for `predict_video`: the frames' detections at the tracker's low floor,
    through the tracker in frame order."""
    return lambda frames: [tracker.update(det) for det in predict_at(frames, tracker.low_score)]


def track_frames(batches: Iterable[list[Image.Image]], predict_at: PredictAt, tracker: ByteTracker,
                 source: str) -> Iterator[Detections]:
    """Each frame's tracked detections, in order; `source` of frame i is "<source>#<i>"."""
    run = tracked(predict_at, tracker)
    index = 0
    for frames in batches:
        for det in run(frames):
            yield dataclasses.replace(det, source=f"{source}#{index}")
            index += 1


def require_trackers() -> Any:
    try:
        import trackers
    except ImportError:
        raise DinokitError("tracking needs the 'trackers' package (ByteTrack): pip install 'dinokit[track]'") from None
    return trackers
