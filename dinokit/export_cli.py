"""`dinokit export` (the inference path for onnxruntime or OpenVINO, or a Hugging Face Hub model
folder) and `dinokit push` (that folder to the Hub): the commands that hand a trained model to
another runtime or place. Mounted by dinokit/cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dinokit.config import ConfigError
from dinokit.files import command_inputs

console = Console()


def export(
    checkpoint: Optional[Path] = typer.Argument(
        None, help="A checkpoint or an official DINO .pth (default: latest run's best.pt)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx, openvino (an IR: .xml + .bin) or hf (a Hugging Face "
                            "Hub model folder, extra \\[hub])."),
    out: Path = typer.Option(..., "--out", help="The file to write, e.g. model.onnx; openvino: model.xml or a "
                             "folder; hf: the folder, e.g. my-model/."),
    opset: int = typer.Option(17, help="ONNX opset (>= 16 for GridSample)."),
    runs: str = typer.Option("runs", "--runs", help="Runs folder searched for the latest checkpoint."),
    int8: bool = typer.Option(False, "--int8", help="openvino: quantise to int8 with NNCF (post-training)."),
    calibration: int = typer.Option(100, "--calibration", help="--int8: training images to calibrate on."),
    data: Optional[str] = typer.Option(None, help="--int8: calibrate on this data instead of the checkpoint's."),
) -> None:
    """Export the inference path (dynamic batch and image size) for onnxruntime or OpenVINO, or a
    model folder (config.json, model.safetensors, README.md model card) for the Hugging Face Hub."""
    from dinokit.api import EXPORT_FORMATS, load
    from dinokit.checkpoint import latest_run_checkpoint

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format must be {', '.join(EXPORT_FORMATS)}, got '{fmt}'")
    path = checkpoint if checkpoint is not None else latest_run_checkpoint(runs)
    if int8 and calibration <= 0:
        raise ConfigError(f"--calibration must be positive, got {calibration}")
    command_inputs(path, outputs={"--out": out})
    written = load(path, "cpu").export(out, fmt, opset, calibration if int8 else 0, data)
    if fmt == "hf":
        console.print(f"wrote {written}/: config.json, model.safetensors, README.md (the model card); load it with "
                      f"dinokit.load('{written}'), or upload it with: dinokit push {written} OWNER/NAME",
                      highlight=False, soft_wrap=True)
        return
    if fmt == "openvino":
        weights = f"int8 (NNCF, {calibration} calibration images)" if int8 else "fp32 weights"
        console.print(f"wrote {written} and {written.with_suffix('.bin').name} (OpenVINO IR, {weights}, from "
                      f"the opset {opset} ONNX graph); run it with: dinokit predict IMAGES --checkpoint {written}",
                      highlight=False, soft_wrap=True)
        return
    console.print(
        f"wrote {written} (opset {opset}; inputs images, masks, orig_sizes; outputs pred_logits, "
        f"pred_boxes, scores, labels, boxes); run it with: dinokit predict IMAGES --checkpoint {written}",
        highlight=False, soft_wrap=True,
    )


def push(
    folder: Path = typer.Argument(..., help="A model folder from dinokit export --format hf."),
    repo: str = typer.Argument(..., help="The Hub repository, owner/name (created if missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    token: Optional[str] = typer.Option(None, "--token", help="Hub token (default: HF_TOKEN or `hf auth login`)."),
    message: str = typer.Option("Upload a dinokit model", "--message", help="The commit message."),
) -> None:
    """Upload a model folder to the Hugging Face Hub (extra \\[hub]; needs the network and a token)."""
    from dinokit.interop.hub import push_folder

    command_inputs(folder / "config.json", folder / "model.safetensors")  # only the card is rewritten (the repo's name)
    url = push_folder(folder, repo, private=private, token=token, message=message)
    console.print(f"pushed {folder} to {repo} ({url}); load it with: dinokit.load('hf://{repo}')",
                  highlight=False, soft_wrap=True)
