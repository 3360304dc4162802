"""The `dinokit` command line. Thin: flags -> the Python API (dinokit.api), one code path for both.

Every user error (a `DinokitError`, a bad flag) ends as one `error: ...` line on stderr and exit
code 2, never a traceback. Heavy imports (torch, the model) happen inside the commands so that
`dinokit --help` is quick.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from dinokit.ablate.cli import app as ablate_app
from dinokit.tune.cli import tune as tune_command
from dinokit.config import ConfigError
from dinokit.data.cli import app as data_app
from dinokit.explain_cli import explain as explain_command
from dinokit.export_cli import export as export_command, push as push_command
from dinokit.info_cli import convert_app, info as info_command
from dinokit.errors import DinokitError, fail
from dinokit.studies import launch as launch_mod
from dinokit.version import __version__

app = typer.Typer(
    name="dinokit",
    help="DINO object detection: train, evaluate, predict and ablate on a laptop CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        print(f"dinokit {__version__}")
        raise typer.Exit()


@app.callback()
def _options(ctx: typer.Context,
             version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                          help="Print dinokit's version and exit.")) -> None:
    from dinokit.files import command_scope

    ctx.with_resource(command_scope())  # every command declares its inputs; the writer refuses them


app.add_typer(data_app, name="data", help="Check, convert and generate datasets.")
app.add_typer(ablate_app, name="ablate", help="Ablation studio: which DINO component buys how much AP.")
console = Console()

BUDGET_HELP = "Budget: choose one of --epochs, --steps, --time-budget"
QUANTIZE_HELP = "none or int8 (dynamic int8 linear layers, CPU only; changes outputs slightly)."
IMAGE_SIZE_HELP = "Resize the longest side to this (default: the checkpoint's own test-time resize)."
COMPILE_HELP = "torch.compile the model (the first batch compiles, for minutes on a CPU)."
PRECISION_HELP = "fp32, bf16, fp16 (CUDA only) or auto (bf16 where the device does it natively)."
LOGGER_HELP = "Also log to mlflow (extra [mlflow]) or tensorboard; repeatable."
MLFLOW_URI_HELP = ("MLflow tracking URI (implies --logger mlflow; default $MLFLOW_TRACKING_URI, else a sqlite "
                   "store in the run folder).")
SLICE_HELP = "Sliced inference for small objects: tiles of this side in pixels, merged (extra \\[slice])."
OVERLAP_HELP = "With --slice: the fraction of a tile shared with its neighbour."


# --------------------------------------------------------------------------- train


def _denoising_flag(denoising: str | None, no_cdn: bool, no_dn: bool) -> str | None:
    chosen = [v for v, on in ((denoising, denoising is not None), ("dn", no_cdn), ("none", no_dn)) if on]
    if len(set(chosen)) > 1:
        raise ConfigError("--denoising, --no-cdn and --no-dn contradict each other; give one")
    return chosen[0] if chosen else None


@app.command()
def train(
    preset: Optional[str] = typer.Option(None, help="tiny (default), r50-4scale or r50-5scale."),
    data: Optional[str] = typer.Option(None, help="shapes, a COCO/VOC/YOLO folder or a COCO JSON file."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config applied on top of the preset."),
    epochs: Optional[int] = typer.Option(None, help="Train for N epochs. " + BUDGET_HELP + "."),
    steps: Optional[int] = typer.Option(None, help="Stop after N optimiser steps."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Stop after MINUTES of training."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per step (per process)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N or mps."),
    queries: Optional[str] = typer.Option(None, help="mixed, pure or static query selection."),
    denoising: Optional[str] = typer.Option(None, help="cdn, dn or none."),
    no_cdn: bool = typer.Option(False, "--no-cdn", help="Same as --denoising dn."),
    no_dn: bool = typer.Option(False, "--no-dn", help="Same as --denoising none."),
    lft: Optional[bool] = typer.Option(None, "--lft/--no-lft", help="Look-forward-twice box refinement."),
    dn_draws: Optional[int] = typer.Option(None, "--dn-draws", help="1 or 2 denoising noise draws."),
    neg_target: Optional[str] = typer.Option(None, "--neg-target", help="background or closest-gt."),
    attention: Optional[str] = typer.Option(None, help="deformable or dense."),
    query_groups: Optional[int] = typer.Option(None, "--query-groups", help="Group DETR: N query groups in training (1 = off)."),
    one_to_many: Optional[int] = typer.Option(None, "--one-to-many", help="H-DETR: N one-to-many queries in training (0 = off)."),
    cls_loss: Optional[str] = typer.Option(None, "--cls-loss", help="focal, vfl, ia-bce, mal or stable."),
    mosaic: Optional[float] = typer.Option(None, help="DEIM: probability of a 2x2 mosaic of images (0 = off)."),
    copy_blend: Optional[float] = typer.Option(None, "--copy-blend", help="DEIMv2: probability of Copy-Blend (0 = off)."),
    no_aug_from: Optional[float] = typer.Option(
        None, "--no-aug-from", help="Budget fraction from which strong augmentation is off, EMA restarted (0 = off)."),
    backbone: Optional[str] = typer.Option(None, help="A torchvision classification model, e.g. resnet50."),
    weights: Optional[str] = typer.Option(
        None, help="Backbone weights (imagenet, a torchvision name, a file) or a whole detector to fine-tune: "
        "a dinokit checkpoint or an official DINO .pth (its preset is the default)."),
    image_size: Optional[int] = typer.Option(
        None, "--image-size", help="Longest image side: evaluation resizes to it and it caps the training sizes."),
    out: Optional[str] = typer.Option(None, help="Runs folder (default runs)."),
    name: Optional[str] = typer.Option(None, help="Run name (default exp, exp2, ...)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a run's last.pt (--name, else the latest run)."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Keep an EMA of the weights; evaluate it."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Ask torch for deterministic kernels."),
    skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help="Skip unreadable images instead of failing."),
    compile_: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    tensorboard: Optional[bool] = typer.Option(
        None, "--tensorboard/--no-tensorboard", help="TensorBoard logs in the run folder (default: on when installed)."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP + " Default fp32."),
    logger: list[str] = typer.Option([], "--logger", help=LOGGER_HELP),
    mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", help=MLFLOW_URI_HELP),
    patience: Optional[int] = typer.Option(None, "--patience", help="Stop after N evaluations without a better AP (0: off)."),
    set_: list[str] = typer.Option([], "--set", help="Override any field: section.field=value (repeatable)."),
    launcher: str = launch_mod.LAUNCHER, nodes: int = launch_mod.NODES, gpus_per_node: int = launch_mod.GPUS_PER_NODE,
    cpus: Optional[int] = launch_mod.CPUS_PER_TASK, partition: Optional[str] = launch_mod.PARTITION,
    time_: Optional[str] = launch_mod.TIME, mem: Optional[str] = launch_mod.MEM,
    slurm_args: list[str] = launch_mod.SLURM_ARGS, wait: bool = launch_mod.WAIT,
) -> None:
    """Train a DINO detector (default: the tiny preset on the built-in shapes data)."""
    launch = launch_mod.Launch(launcher, partition, time_, gpus_per_node, cpus, mem, slurm_args, wait, nodes)
    _inputs(config, weights)  # the run (a resumed one too) may replace neither
    if launch.on_slurm:  # this same command (these flags) as one job of DDP processes
        flags = {k: v for k, v in locals().items() if k != "launch"}
        logs = Path(out or "runs") / "train" / "slurm"
        from dinokit.studies.slurm import submit_command

        return submit_command(launch, "dinokit.cli:train", flags, logs, _say)
    from dinokit.api import train as api_train
    from dinokit.training.loggers import logger_fields

    fields = {
        "queries": queries, "denoising": _denoising_flag(denoising, no_cdn, no_dn), "lft": lft,
        "dn_draws": dn_draws, "neg_target": neg_target, "attention": attention, "backbone": backbone,
        "weights": weights, "query_groups": query_groups, "one_to_many_queries": one_to_many, "cls": cls_loss,
        "mosaic": mosaic, "copy_blend": copy_blend, "no_aug_from": no_aug_from,
        "image_size": image_size, "skip_bad_images": skip_bad_images or None,
        "epochs": epochs, "steps": steps, "time_budget": time_budget, "batch_size": batch_size, "device": device,
        "out": out, "name": name, "seed": seed, "ema": ema, "deterministic": deterministic or None,
        "compile": compile_ or None, "tensorboard": tensorboard, "precision": precision, "patience": patience,
    }
    fields.update({k: v for k, v in logger_fields(logger, mlflow_uri).items() if v is not None})  # MLflow
    _check_precision(precision, device or "auto")
    run = api_train(data, preset, config=config, resume=resume, overrides=set_, progress=True, **fields)
    if run.rank != 0:
        return
    if run.interrupted:
        raise DinokitError(
            f"interrupted at step {run.steps}: saved {run.dir / 'last.pt'} "
            f"(continue with: dinokit train --resume --out {run.dir.parent.parent} --name {run.dir.name})"
        )
    best = run.best
    console.print(
        f"done: best AP {100 * best.get('AP', 0.0):.1f} (AP50 {100 * best.get('AP50', 0.0):.1f}) at step "
        f"{best.get('step', 0)}; run files in {run.dir}", highlight=False,
    )
# --------------------------------------------------------------------------- eval


@app.command("eval")
def evaluate(
    checkpoint: Optional[Path] = typer.Argument(
        None, help="A .pt checkpoint, .onnx or OpenVINO .xml (default: latest run's best.pt)."),
    data: Optional[str] = typer.Option(None, help="Evaluate on this data instead of the checkpoint's."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write the metrics to this JSON file."),
    detections: Optional[Path] = typer.Option(None, "--detections", help="Write COCO-format detections here."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per forward pass."),
    runs: str = typer.Option("runs", "--runs", help="Runs folder searched for the latest checkpoint."),
    weights: Optional[Path] = typer.Option(None, help="Same as CHECKPOINT; also takes an official DINO .pth."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help=IMAGE_SIZE_HELP),
    quantize: str = typer.Option("none", help=QUANTIZE_HELP),
    compile_: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP + " Default: the checkpoint's."),
    split: str = typer.Option("val", "--split", help="train, val or test (when the dataset has one)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the diagnostics (default runs/eval/expN)."),
    slice_: Optional[int] = typer.Option(None, "--slice", help=SLICE_HELP),
    overlap: float = typer.Option(0.2, "--overlap", help=OVERLAP_HELP),
) -> None:
    """COCO AP, P/R/F1 at the F1-optimal score, PR/F1 curves and confusion matrix of a checkpoint."""
    from dinokit.api import load
    from dinokit.checkpoint import latest_run_checkpoint
    from dinokit.infer.speed import check_quantize
    from dinokit.infer.tables import metrics_table, per_class_table
    from dinokit.runtime.rundir import new_run_dir

    check_quantize(quantize)  # a bad value fails before the model loads
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split must be train, val or test, got '{split}'")
    _check_precision(precision, device)
    _check_slice(slice_, overlap)
    checkpoint = _one_checkpoint(checkpoint, weights, "CHECKPOINT")
    path = checkpoint if checkpoint is not None else latest_run_checkpoint(runs)
    _inputs(path, outputs={"--json": json_file, "--detections": detections})  # the data joins as it is read
    detector = load(path, device, precision, image_size=image_size, quantize=quantize, compile=compile_)
    if detector.precision_note:
        _say(detector.precision_note)
    out = out if out is not None else new_run_dir(runs, "exp", command="eval")
    metrics = detector.evaluate(data, batch_size, detections=detections, split=split, out=out, slice=slice_,
                                overlap=overlap)
    sliced = f", sliced into {slice_} px tiles (overlap {overlap:g})" if slice_ is not None else ""
    console.print(f"checkpoint {path}, {split} split{sliced}; diagnostics in {out}", highlight=False)
    console.print(metrics_table(metrics))
    console.print(per_class_table(metrics))
    if json_file is not None:
        _write_json(json_file, {"checkpoint": str(path), **metrics})


def _check_precision(precision: str | None, device: str) -> None:
    """A bad --precision (or fp16 on a CPU) fails before the model loads."""
    if precision is not None:
        from dinokit.infer.precision import resolve_precision
        from dinokit.runtime.device import resolve_device

        resolve_precision(precision, resolve_device(device))


def _check_slice(tile: int | None, overlap: float) -> None:
    """A bad --slice / --overlap, or a missing [slice] extra, fails before the model loads."""
    if tile is not None:
        from dinokit.infer.slice import check_slicing, require_supervision

        check_slicing(tile, overlap, flags=True)
        require_supervision()


def _say(message: str) -> None:
    console.print(message, highlight=False)


def _one_checkpoint(checkpoint: Path | None, weights: Path | None, name: str) -> Path | None:
    if checkpoint is not None and weights is not None:
        raise ConfigError(f"{name} and --weights both name the weights; give one")
    return checkpoint if checkpoint is not None else weights


def _inputs(*paths: Any, outputs: dict[str, Any] | None = None) -> None:
    """The command's inputs, declared once (what is not a file, such as `--weights imagenet`, is
    skipped): the atomic writer refuses to replace any of them (dinokit/files.py)."""
    from dinokit.files import command_inputs

    command_inputs(*paths, outputs=outputs)


def _write_json(path: Path, payload: Any) -> None:
    from dinokit.files import write_json

    write_json(path, payload)


# --------------------------------------------------------------------------- predict


@app.command()
def predict(
    sources: list[str] = typer.Argument(..., help="Image files, folders, globs or videos (.mp4, ...: extra \\[video])."),
    checkpoint: Optional[Path] = typer.Option(
        None, help="A .pt checkpoint, .onnx, OpenVINO .xml, a model folder or hf://owner/name "
                   "(default: latest run's best.pt)."),
    score: Optional[float] = typer.Option(
        None, help="Keep detections scoring at least this (default: the checkpoint's F1-optimal threshold, else 0.3)."),
    out: Optional[Path] = typer.Option(None, help="Folder for annotated images (default runs/predict/expN)."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Detections JSON (default OUT/detections.json)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per forward pass."),
    runs: str = typer.Option("runs", "--runs", help="Runs folder (latest checkpoint; default output)."),
    weights: Optional[Path] = typer.Option(None, help="Same as --checkpoint; also takes an official DINO .pth."),
    backend: Optional[str] = typer.Option(
        None, help="torch, onnx or openvino (default: onnx for a .onnx file, openvino for a .xml)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help=IMAGE_SIZE_HELP),
    quantize: str = typer.Option("none", help=QUANTIZE_HELP),
    compile_: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP + " Default: the checkpoint's."),
    slice_: Optional[int] = typer.Option(None, "--slice", help=SLICE_HELP),
    overlap: float = typer.Option(0.2, "--overlap", help=OVERLAP_HELP),
    track: bool = typer.Option(
        False, "--track", help="Videos: ByteTrack ids in the JSON lines and the drawing (extra \\[track])."),
) -> None:
    """Detect objects in images; write annotated copies and a JSON of detections."""
    from dinokit.api import load
    from dinokit.checkpoint import latest_run_checkpoint, require_checkpoint_file
    from dinokit.infer.predictor import check_predict_options, gather_inputs, input_shapes
    from dinokit.infer.outputs import output_paths, planned_outputs
    from dinokit.infer.video import is_video
    from dinokit.interop.hub import resolve_source
    from dinokit.runtime.rundir import new_run_dir

    check_predict_options(0.3 if score is None else score, batch_size, flags=True)
    if backend not in (None, "torch", "onnx", "openvino"):
        raise ConfigError(f"--backend must be torch, onnx or openvino, got '{backend}'")
    _check_precision(precision, device)
    _check_slice(slice_, overlap)
    videos = [s for s in sources if is_video(s)]
    images = [s for s in sources if s not in videos]
    if track:
        from dinokit.infer.track import require_trackers

        if not videos:
            raise ConfigError("--track follows objects through a video: give a video file (.mp4, ...)")
        require_trackers()
    inputs = gather_inputs(images) if images else []  # a missing file is reported before anything is created
    checkpoint = _one_checkpoint(checkpoint, weights, "--checkpoint")
    path = checkpoint if checkpoint is not None else latest_run_checkpoint(runs)
    path = resolve_source(path)  # hf://owner/name: fetched into the Hugging Face cache (a model folder)
    require_checkpoint_file(path)
    input_shapes(inputs)  # a file that is not an image fails before the model loads
    names = [name for name, _ in inputs]
    _inputs(path, *videos, *(p for _, p in inputs if isinstance(p, Path)),
            outputs=planned_outputs(out, json_file, videos, names))
    detector = load(path, device, precision, backend=backend, image_size=image_size, quantize=quantize, compile=compile_)
    if detector.precision_note:
        _say(detector.precision_note)
    score, score_source = detector.default_score(score)
    out_dir = out if out is not None else new_run_dir(runs, "exp", command="predict")
    video_targets, image_targets = output_paths(videos, names, out_dir)  # one naming rule for both
    for video, (video_out, lines_out) in zip(videos, video_targets):  # an annotated copy, a JSON line per frame
        frames = detector.predict_video(video, video_out, lines_out, score, batch_size,
                                        slice=slice_, overlap=overlap, track=track)
        console.print(f"{video}: {frames} frame(s): video {video_out}, JSON lines {lines_out}",
                      highlight=False, soft_wrap=True)
    if not images:
        return
    results = detector.predict(images, score, batch_size, slice=slice_, overlap=overlap)
    json_path = json_file if json_file is not None else out_dir / "detections.json"
    records = []
    for det, target in zip(results, image_targets):
        det.save(target)
        records.append({**det.to_dict(), "output": str(target)})
    _write_json(json_path, records)
    count = sum(len(r) for r in results)
    console.print(
        f"{len(results)} image(s), {count} detection(s) >= {score:g} ({score_source}): images in {out_dir}, "
        f"JSON {json_path}",
        highlight=False,
    )


# --------------------------------------------------------------------------- the commands in their own modules


app.add_typer(convert_app, name="convert", help="Convert weights from other DINO implementations.")
app.command("info")(info_command)  # dinokit/info_cli.py
app.command("export")(export_command)  # dinokit/export_cli.py
app.command("push")(push_command)
app.command("tune")(tune_command)  # dinokit/tune/cli.py
app.command("explain")(explain_command)  # dinokit/explain_cli.py


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app, turning user errors into one line and exit code 2."""
    from dinokit.runtime.allocator import tune_allocator

    tune_allocator()  # large tensors reuse freed memory instead of page-faulting fresh pages
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="dinokit", standalone_mode=False)
    except typer.Abort:
        fail("aborted")
    except DinokitError as exc:
        fail(exc)
    except KeyboardInterrupt:
        fail("interrupted")
    except OSError as exc:  # a file dinokit cannot read or write: one line, not a traceback
        name = exc.filename2 or exc.filename  # a failed rename names the target second
        fail(f"cannot access {name}: {exc.strerror}" if name else f"file system: {exc}")
    except Exception as exc:
        # click's usage errors, recognised by click's documented interface (typer may vendor
        # click, so its classes are not importable from a public module)
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message())  # type: ignore[attr-defined]
            sys.exit(0)
        if callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int):
            fail(exc.format_message())  # type: ignore[attr-defined]
        raise
    if rv == 130:  # typer turns KeyboardInterrupt into exit code 130
        fail("interrupted")
    sys.exit(rv if isinstance(rv, int) else 0)
