"""`dinokit predict clip.mp4`: detections on every frame of a video (optional extra `[video]`,
PyAV), an annotated copy of the video and one JSON line per frame. Frames are decoded and
detected a batch at a time, so a long video never sits in memory."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image

from dinokit.errors import DataError, DinokitError
from dinokit.files import atomic_open, atomic_path, refuse_overwriting

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
PredictFn = Callable[[list[Image.Image]], list[Any]]  # frames -> one Detections each


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES and Path(path).is_file()


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise DinokitError("video needs the 'av' package (PyAV): pip install 'dinokit[video]'") from None
    return av


def predict_video(
    path: str | Path, predict: PredictFn, out_video: str | Path, json_lines: str | Path, batch_size: int = 8,
) -> int:
    """Run `predict` over the frames of `path` in batches; write the annotated video (H.264 when
    available, else MPEG-4) and a JSON-lines file (frame, time in seconds, detections). Returns
    the number of frames. Both outputs are written to temporary files and renamed at the end: an
    error leaves neither half-written (and the previous ones intact), and neither may be `path`."""
    av = _av()
    path, out_video, json_lines = Path(path), Path(out_video), Path(json_lines)
    refuse_overwriting({"video output": out_video, "JSON lines": json_lines}, [path])
    try:
        container = av.open(str(path))
    except Exception as exc:  # noqa: BLE001 - PyAV raises its own error types
        raise DataError(f"cannot read video {path}: {str(exc).splitlines()[0][:120]}") from None
    with container, atomic_path(out_video) as tmp_video, atomic_open(json_lines) as lines:
        if not container.streams.video:
            raise DataError(f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or Fraction(25, 1)
        count, writer = 0, None
        try:
            for frames in _batches(container, stream, batch_size):
                images = [frame.to_image().convert("RGB") for frame in frames]
                for frame, det in zip(frames, predict(images)):
                    drawn = det.plot()
                    if writer is None:
                        writer = _Writer(av, tmp_video, rate, drawn.size)
                    writer.write(drawn)
                    seconds = float(frame.pts * stream.time_base) if frame.pts is not None else count / float(rate)
                    record = {"frame": count, "time": round(seconds, 4), **det.to_dict()}
                    record.pop("file", None)
                    lines.write(json.dumps(record) + "\n")
                    count += 1
        finally:
            if writer is not None:
                writer.close()
        if count == 0:
            raise DataError(f"{path} has no decodable frames")
    return count


def _batches(container: Any, stream: Any, size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for frame in container.decode(stream):
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Writer:
    """Annotated frames -> a video file; even frame sides, as yuv420p needs."""

    def __init__(self, av: Any, path: Path, rate: Fraction, size: tuple[int, int]) -> None:
        self.size = (size[0] + size[0] % 2, size[1] + size[1] % 2)
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.container = av.open(str(path), mode="w")  # the temp name keeps the suffix: the muxer
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self.av = av

    def write(self, image: Image.Image) -> None:
        if image.size != self.size:
            image = image.resize(self.size, Image.Resampling.BILINEAR)
        frame = self.av.VideoFrame.from_image(image)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and close the file, even when flushing fails."""
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()


def frame_rate(path: str | Path) -> float:
    """The video's average frame rate (25 when the file does not say), or DataError."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream")
            return float(container.streams.video[0].average_rate or 25)
    except DinokitError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV raises its own error types
        raise DataError(f"cannot read video {path}: {str(exc).splitlines()[0][:120]}") from None


def video_frames(path: str | Path, batch_size: int = 8) -> Iterator[list[Image.Image]]:
    """The video's frames as RGB images, `batch_size` at a time (decoded as they are needed)."""
    av = _av()
    try:
        container = av.open(str(path))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read video {path}: {str(exc).splitlines()[0][:120]}") from None
    with container:
        if not container.streams.video:
            raise DataError(f"{path} has no video stream")
        for frames in _batches(container, container.streams.video[0], batch_size):
            yield [frame.to_image().convert("RGB") for frame in frames]
