"""Tracking on a synthetic clip, by hand: four shapes moving over a textured background (two of
them crossing), tracked with and without the NMS that runs before ByteTrack; prints how many
tracks each gives and how long they last, and writes the annotated clip and one frame as PNG.

    python benchmarks/track_demo.py CHECKPOINT [--out runs/track_demo] [--frame 5]

CHECKPOINT: a detector trained on the shapes data (e.g. `dinokit train --steps 400`).
"""

from __future__ import annotations

import argparse
import collections
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import dinokit
from dinokit.infer.track import ByteTracker, track_frames
from dinokit.infer.video import frame_rate, video_frames

WIDTH, HEIGHT, FRAMES, FPS = 192, 144, 45, 15


def write_clip(path: Path, seed: int = 3) -> None:
    """A circle moving right, a square moving left, a triangle moving up-right across the square's
    path, a ring swaying in place."""
    import av

    rng = np.random.default_rng(seed)
    grid = rng.uniform(40, 200, (3, 3, 3)).astype(np.uint8)
    background = np.asarray(Image.fromarray(grid).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR), np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = WIDTH, HEIGHT, "yuv420p", 2_000_000
        for f in range(FRAMES):
            noisy = (background + rng.uniform(-8, 8, background.shape)).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(noisy)
            draw = ImageDraw.Draw(image)
            x = 20 + 3 * f
            draw.ellipse([x, 30, x + 34, 64], fill=(230, 60, 60))
            x = 150 - 3 * f
            draw.rectangle([x, 80, x + 32, 112], fill=(40, 90, 230))
            x, y = 30 + 2 * f, 120 - 2 * f
            draw.polygon([(x, y - 18), (x + 18, y + 18), (x - 18, y + 18)], fill=(250, 220, 40))
            cx = 150 + 12 * math.sin(f / 7)
            draw.ellipse([cx - 18, 20, cx + 18, 56], outline=(20, 200, 90), width=6)
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default="runs/track_demo")
    parser.add_argument("--frame", type=int, default=5, help="the annotated frame written as PNG")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = out / "shapes.mp4"
    write_clip(clip)
    detector = dinokit.load(args.checkpoint, "cpu")
    score = detector.default_score(None)[0]
    for name, iou in (("with NMS at IoU 0.7", 0.7), ("without NMS", 1.0)):
        tracker = ByteTracker(score, frame_rate(clip), duplicate_iou=iou)
        frames = track_frames(video_frames(clip), lambda images, floor: detector.predict(images, floor), tracker,
                              str(clip))
        lengths = collections.Counter(t for det in frames for t in det.track_ids.tolist() if t >= 0)
        long = sum(n >= 0.7 * FRAMES for n in lengths.values())
        print(f"{name:20s} {len(lengths):3d} tracks, {long} of them in >= 70% of the {FRAMES} frames "
              f"(frames per track: {sorted(lengths.values(), reverse=True)})")
    detector.predict_video(clip, out / "tracked.mp4", track=True)
    import av

    with av.open(str(out / "tracked.mp4")) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k == args.frame:
                frame.to_image().save(out / f"frame{k}.png")
    print(f"annotated clip {out / 'tracked.mp4'}, frame {args.frame} as {out / f'frame{args.frame}.png'}")


if __name__ == "__main__":
    main()
