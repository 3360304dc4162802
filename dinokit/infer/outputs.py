"""Where `dinokit predict` writes: one annotated file per input and the detections JSON, named
before anything runs so that an output that would land on an input is refused up front."""

from __future__ import annotations

from pathlib import Path

SAVEABLE = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def output_names(sources: list[str], out_dir: Path) -> list[Path]:
    """One annotated-image path per source in `out_dir`: the source's stem, numbered when repeated."""
    used: set[str] = set()
    paths = []
    for name in sources:
        source = Path(name)
        suffix = source.suffix.lower() if source.suffix.lower() in SAVEABLE else ".png"
        file_name, n = f"{source.stem}{suffix}", 2
        while file_name in used:
            file_name, n = f"{source.stem}_{n}{suffix}", n + 1
        used.add(file_name)
        paths.append(out_dir / file_name)
    return paths


def planned_outputs(out: Path | None, json_file: Path | None, videos: list[str], images: list[str]) -> dict[str, Path]:
    """{what (the flag and file): path} for every file predict will write. Without `out` the
    outputs go to a fresh run folder, where nothing of the user's can be."""
    planned: dict[str, Path] = {"--json": json_file} if json_file is not None else {}
    if out is None:
        return planned
    for video in videos:
        stem = Path(video).stem
        planned[f"--out ({stem}.mp4)"] = out / f"{stem}.mp4"
        planned[f"--out ({stem}.jsonl)"] = out / f"{stem}.jsonl"
    for name, target in zip(images, output_names(images, out)):
        planned[f"--out ({target.name})"] = target
    if json_file is None:
        planned["--out (detections.json)"] = out / "detections.json"
    return planned
