"""Where `dinokit predict` writes: one annotated file per input (and a JSON-lines file per video)
and the detections JSON, named before anything runs so that an output that would land on an
input is refused up front.

One naming rule for images and videos: an input writes OUT/<stem><suffix>; when one of its names
is already taken by an earlier input (two `a.jpg` from two folders, two `clip.mp4`, or `A.png`
and `a.png`, which are one file on a case-insensitive disk), it gets `<stem>_2`, `<stem>_3`, ...
Videos are named first (they are predicted first), then images, each in the order given."""

from __future__ import annotations

from pathlib import Path

SAVEABLE = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_OUTPUTS = (".mp4", ".jsonl")  # the annotated video and its JSON lines (one per frame)


class OutputNames:
    """Hands out output file names in one folder, none twice (compared case-insensitively)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.used: set[str] = set()

    def take(self, source: str | Path, suffixes: tuple[str, ...]) -> list[Path]:
        """One path per suffix for `source`, all with the same stem: its own, else numbered."""
        stem = Path(source).stem
        base, n = stem, 2
        while any(f"{base}{s}".lower() in self.used for s in suffixes):
            base, n = f"{stem}_{n}", n + 1
        self.used.update(f"{base}{s}".lower() for s in suffixes)
        return [self.out_dir / f"{base}{s}" for s in suffixes]


def image_suffix(source: str | Path) -> str:
    """An annotated image keeps its format where PIL writes it, else becomes a PNG."""
    suffix = Path(source).suffix.lower()
    return suffix if suffix in SAVEABLE else ".png"


def output_paths(videos: list[str], images: list[str], out_dir: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """([(video, json lines) per video], [annotated image per image]) in `out_dir`, by the one rule."""
    names = OutputNames(out_dir)
    video_paths = [(video, lines) for video, lines in (names.take(v, VIDEO_OUTPUTS) for v in videos)]
    image_paths = [names.take(i, (image_suffix(i),))[0] for i in images]
    return video_paths, image_paths


def output_names(sources: list[str], out_dir: Path) -> list[Path]:
    """One annotated-image path per image source in `out_dir` (no videos): see `output_paths`."""
    return output_paths([], sources, out_dir)[1]


def planned_outputs(out: Path | None, json_file: Path | None, videos: list[str], images: list[str]) -> dict[str, Path]:
    """{what (the flag and file): path} for every file predict will write. Without `out` the
    outputs go to a fresh run folder, where nothing of the user's can be."""
    planned: dict[str, Path] = {"--json": json_file} if json_file is not None else {}
    if out is None:
        return planned
    video_paths, image_paths = output_paths(videos, images, out)
    for target in [p for pair in video_paths for p in pair] + image_paths:
        planned[f"--out ({target.name})"] = target
    if json_file is None:
        planned["--out (detections.json)"] = out / "detections.json"
    return planned
