"""`dinokit info` (parameters and GFLOPs of a configuration) and `dinokit convert official`
(official DINO weights to a dinokit checkpoint): the two commands that look at a model without
training or running it. Mounted by dinokit/cli.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from dinokit.config import ConfigError

console = Console()

convert_app = typer.Typer(no_args_is_help=True, help="Convert weights from other DINO implementations.")


@convert_app.command("official")
def convert_official(
    checkpoint: Path = typer.Argument(..., help="An IDEA-Research/DINO .pth: {'model': state_dict, ...} or a state_dict."),
    out: Path = typer.Option(..., "--out", help="The dinokit checkpoint to write (.pt)."),
    set_: list[str] = typer.Option([], "--set", help="What the weights cannot tell: model.nheads (default 8)."),
) -> None:
    """Turn an official ResNet-50 4-scale or 5-scale checkpoint into a dinokit checkpoint."""
    from dinokit.files import command_inputs
    from dinokit.interop.official import convert_official as run_convert

    command_inputs(checkpoint, outputs={"--out": out})
    path, cfg = run_convert(checkpoint, out, set_)
    m = cfg.model
    console.print(
        f"wrote {path}: {m.num_feature_levels}-scale {m.backbone}, {m.num_queries} queries, {m.num_classes} "
        f"COCO class slots", highlight=False, soft_wrap=True,
    )


# --------------------------------------------------------------------------- info


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' or 'N' (square) -> (H, W)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise ConfigError(f"--size must look like HxW (e.g. 800x1333) or N, got '{text}'")
    return values[0], values[1]


def info(
    preset: str = typer.Option("tiny", help="tiny, r50-4scale or r50-5scale."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config applied on top of the preset."),
    set_: list[str] = typer.Option([], "--set", help="Override any field: section.field=value (repeatable)."),
    size: Optional[str] = typer.Option(None, help="Input size HxW for the FLOP count (default image_size square)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Parameter counts per part and GFLOPs of a configuration (no weights are downloaded)."""
    from dinokit.api import train_config
    from dinokit.checkpoint import versions
    from dinokit.model.summary import model_summary

    cfg = train_config(None, preset, config, False, set_, {})
    shape = parse_size(size) if size else (cfg.data.image_size, cfg.data.image_size)
    summary = {"versions": versions(), **model_summary(cfg, shape)}  # the versions a checkpoint records
    if json_out:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=f"{preset}: {cfg.model.backbone}, {cfg.model.num_queries} queries, input {shape[0]}x{shape[1]}")
    table.add_column("")
    table.add_column("value", justify="right")
    for key, value in _flatten(summary):
        text = f"{value:,}" if isinstance(value, int) else f"{value:.2f}" if isinstance(value, float) else str(value)
        table.add_row(key, text)
    console.print(table)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in d.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key} ")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows
