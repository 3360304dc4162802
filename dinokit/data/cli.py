"""`dinokit data ...`: check a dataset, convert VOC / YOLO to COCO JSON, write the shapes dataset.

Mounted by the main CLI as `dinokit data`. Bad input raises DataError (the main CLI prints it as
one line, exit code 2); `check` with fatal findings prints its table and exits with 1.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.table import Table

from dinokit.data.formats import relocate, source_files, voc_to_coco, yolo_to_coco
from dinokit.files import command_inputs, write_json
from dinokit.data.shapes import write_shapes
from dinokit.errors import DataError

if TYPE_CHECKING:  # check pulls in torch; imported inside the command so `--help` stays quick
    from dinokit.data.check import CheckReport, SplitReport

app = typer.Typer(help="Check, convert and generate datasets.", no_args_is_help=True)


class SourceFormat(str, Enum):
    voc = "voc"
    yolo = "yolo"


class Split(str, Enum):
    train = "train"
    val = "val"


@app.command()
def check(
    data: str = typer.Argument(..., help="'shapes', a COCO/VOC/YOLO folder, or a COCO JSON file."),
    quick: bool = typer.Option(False, "--quick", help="Only check that image files exist (do not decode them)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON to this file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for labels.png (default runs/data/expN)."),
) -> None:
    """Report missing/corrupt images, bad boxes, unknown categories and duplicate ids, per split;
    per class the instances, images and median box size; labels.png."""
    from dinokit.data.check import check_data, write_label_plots
    from dinokit.runtime.rundir import new_run_dir

    command_inputs(data, outputs={"--json": json_out})  # the dataset's files join as it is resolved
    report = check_data(data, read_images=not quick)
    console = Console()
    print_report(report, console)
    out = out if out is not None else new_run_dir("runs", "exp", command="data")
    for path in write_label_plots(data, report, out):
        console.print(f"wrote {path}", highlight=False)
    if json_out is not None:
        write_json(json_out, report.to_dict())
    if report.fatal:
        raise typer.Exit(1)


@app.command()
def convert(
    src: Path = typer.Argument(..., help="VOC folder, or YOLO folder with data.yaml (or the yaml file)."),
    fmt: SourceFormat = typer.Option(..., "--from", help="Format of SRC."),
    out: Path = typer.Option(..., "--out", help="COCO JSON file to write."),
    split: Optional[Split] = typer.Option(None, "--split", help="Only this split (default: every image)."),
) -> None:
    """Convert Pascal VOC XML or YOLO txt annotations to one COCO JSON file."""
    if not src.exists():
        raise DataError(f"data path does not exist: {src}")
    if out.suffix.lower() != ".json":
        raise DataError(f"--out must be a .json file, got {out}")
    command_inputs(source_files(src.parent if src.is_file() else src), outputs={"--out": out})
    which = split.value if split else None
    coco = voc_to_coco(src, which) if fmt is SourceFormat.voc else yolo_to_coco(src, which)
    root = src.parent if src.is_file() else src  # file_names are relative to the dataset folder
    relocate(coco, root, out.parent)
    write_json(out, coco, indent=None)
    typer.echo(f"wrote {out}: {len(coco['images'])} images, {len(coco['annotations'])} boxes, "
               f"{len(coco['categories'])} classes ({', '.join(c['name'] for c in coco['categories'])})")


@app.command()
def shapes(
    out: Path = typer.Option(..., "--out", help="Folder to create (must not exist or be empty)."),
    train: int = typer.Option(800, "--train", help="Training images."),
    val: int = typer.Option(100, "--val", help="Validation images."),
    size: int = typer.Option(128, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same dataset."),
) -> None:
    """Write the built-in synthetic shapes dataset as COCO JSON + JPEG images."""
    command_inputs()  # reads nothing; OUT must not exist or be empty (checked by write_shapes)
    write_shapes(out, train, val, size, seed)
    typer.echo(f"wrote {out}: {train} train + {val} val images of {size}x{size} px "
               f"(use it with --data {out})")


def class_table(split: "SplitReport") -> Table:
    """Per class: instances, images holding them, median box width x height in pixels."""
    table = Table(title=f"{split.split}: labels per class", expand=False)
    for name in ("class", "instances", "images", "median box (w x h px)"):
        table.add_column(name, justify="left" if name == "class" else "right")
    for name, s in split.class_stats.items():
        size = f"{s.median_width:.0f} x {s.median_height:.0f}" if s.instances else "-"
        table.add_row(name, str(s.instances), str(s.images), size)
    return table


def print_report(report: CheckReport, console: Console) -> None:
    """One table per split: counts, then each finding with its severity and first offenders."""
    from dinokit.data.check import NO_ANNOTATIONS

    console.print(f"[bold]{report.data}[/] ({report.kind}): {len(report.class_names)} classes: "
                  f"{', '.join(report.class_names[:20])}{' ...' if len(report.class_names) > 20 else ''}")
    for split in report.splits:
        console.print(f"\n[bold]{split.split}[/]: {split.num_images} images, {split.num_annotations} boxes")
        console.print(f"  annotations {split.ann_file}\n  images      {split.images_dir}")
        table = Table(expand=False)
        table.add_column("problem")
        table.add_column("count", justify="right")
        table.add_column("severity")
        table.add_column("first offenders", overflow="fold")
        for f in sorted(split.findings.values(), key=lambda f: (not f.fatal, f.kind)):
            severity = "[red]fatal[/]" if f.fatal else "[yellow]warning[/]"
            if f.kind == NO_ANNOTATIONS:
                severity = "info (allowed)"
            table.add_row(f.kind, str(f.count), severity, "\n".join(f.examples))
        if not split.findings:
            table.add_row("none", "0", "[green]ok[/]", "")
        console.print(table)
        console.print(class_table(split))
        console.print(f"background images (no boxes; negatives in training, evaluated): {split.background}")
    if report.note:
        console.print(report.note, markup=False, highlight=False, soft_wrap=True)
    verdict = "[red]fatal problems: fix them before training[/]" if report.fatal else "[green]usable[/]"
    console.print(verdict)

