"""The Python API, and the one code path under the CLI's train / eval / predict / export.

    import dinokit
    detector = dinokit.load("runs/train/exp/best.pt")      # or an official DINO .pth, or a .onnx
    for det in detector.predict("photos/"):                  # path, glob, folder, PIL, NumPy, tensor
        print(det.to_pandas())
    run = dinokit.train(data="shapes", preset="tiny", steps=50)
    run.detector().evaluate()

torch and the model are imported inside the functions, so that `import dinokit` stays quick.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from dinokit.config import Config, ConfigError, apply_dict, budget_flags, load_preset, load_yaml, overrides_dict
from dinokit.errors import CheckpointError

DEFAULT_SCORE = 0.3  # predict's score threshold when none is given and the checkpoint stores none

class Detector:
    """A loaded detector (torch or onnxruntime) with what it was trained on; create it with `load`."""

    def __init__(self, backend: Any, device: Any, source: Path, precision: str = "fp32", precision_note: str = "") -> None:
        self._backend = backend  # dinokit.infer.predictor.Backend
        self.device = device
        self.source = source
        self.precision = precision  # resolved: fp32, bf16 or fp16
        self.precision_note = precision_note  # what `auto` chose and why ("" otherwise)

    @property
    def class_names(self) -> list[str]:
        return list(self._backend.classes)

    @property
    def config(self) -> Config:
        """The configuration the detector was built with (its data section gives the test-time resize)."""
        return self._backend.cfg

    @property
    def score_threshold(self) -> float | None:
        """The F1-optimal score threshold of the checkpoint's best evaluation (None if not stored);
        `predict` keeps detections scoring at least this when no `score` is given."""
        return self._backend.score_threshold

    def default_score(self, score: float | None) -> tuple[float, str]:
        """(the score threshold to use, where it comes from): `score` when given, else the stored
        F1-optimal one, else 0.3."""
        if score is not None:
            return score, "given"
        if self.score_threshold is not None:
            return self.score_threshold, "the checkpoint's F1-optimal threshold"
        return DEFAULT_SCORE, "the default; the checkpoint stores no F1-optimal threshold"

    def __repr__(self) -> str:
        kind = "onnx" if self._backend.model is None else "torch"
        return f"Detector({str(self.source)!r}, {kind}, {len(self.class_names)} classes, device={self.device})"

    def predict(self, source: Any, score: float | None = None, batch_size: int = 8) -> list[Any]:
        """One `Detections` per image of `source`: a path, glob or folder, a PIL image, a NumPy
        (H, W, 3) uint8 array, a torch (3, H, W) float tensor in [0, 1], or a list of these.
        `score` None: the checkpoint's F1-optimal threshold (`score_threshold`), else 0.3."""
        from dinokit.data.transforms import eval_transforms
        from dinokit.infer.predictor import detect_images, gather_inputs

        inputs = gather_inputs(source)
        score = self.default_score(score)[0]
        with self._autocast():
            return detect_images(
                self._backend, inputs, eval_transforms(self.config.data), self.device, batch_size, score
            )

    def predict_video(
        self, source: str | Path, out: str | Path, json_lines: str | Path | None = None, score: float | None = None,
        batch_size: int = 8,
    ) -> int:
        """Detect on every frame of a video (PyAV, extra [video]); write the annotated video to
        `out` and one JSON line per frame to `json_lines` (default: `out` with .jsonl). Returns
        the number of frames."""
        from dinokit.infer.predictor import check_predict_options
        from dinokit.infer.video import predict_video

        from dinokit.files import reading

        score = self.default_score(score)[0]
        check_predict_options(score, batch_size)  # before the output video is opened
        out = Path(out)
        lines = Path(json_lines) if json_lines is not None else out.with_suffix(".jsonl")
        with reading(self.source, source, outputs={"video output": out, "JSON lines": lines}):
            return predict_video(source, lambda frames: self.predict(frames, score, batch_size), out, lines, batch_size)

    def evaluate(
        self, data: str | None = None, batch_size: int | None = None, detections: str | Path | None = None,
        split: str = "val", out: str | Path | None = None,
    ) -> dict[str, Any]:
        """COCO metrics (AP, AP50, ..., AR100, per_class AP) and, at the F1-optimal score threshold
        (`score_threshold`), macro P / R / F1 and `per_class_prf`, on the `split` (train, val, test)
        of `data` (default: the detector's own data); `detections` also writes the COCO results
        JSON there; `out` writes the diagnostic files (pr_curve.png, f1_curve.png,
        confusion_matrix.png / .csv, per_class.csv) into that folder. No output may replace the
        checkpoint or a file of the data (refused before the evaluation runs)."""
        from dinokit.files import reading, write_json
        from dinokit.infer.evaluator import evaluate_model

        if self._backend.model is None:
            raise CheckpointError("evaluate needs a torch checkpoint (.pt / .pth), not an ONNX model")
        with reading(self.source, outputs={"detections": detections}):  # the data joins as it is read
            with self._autocast():
                metrics, dets = evaluate_model(
                    self._backend.model, self.config, self.class_names, self.device, data, batch_size,
                    split=split, out=out,
                )
            if detections is not None:
                write_json(detections, dets)
        return metrics

    def export(self, path: str | Path, format: str = "onnx", opset: int = 17) -> Path:
        """Write the inference graph (dynamic batch and image size) for onnxruntime, or with
        format="hf" a model folder for the Hugging Face Hub (config.json, model.safetensors and a
        README.md model card; interop/hub.py, extra [hub]); returns the path (never the checkpoint's own)."""
        from dinokit.files import reading
        from dinokit.infer.export import export_onnx

        if format not in ("onnx", "hf"):
            raise ConfigError(f"export format must be onnx or hf, got '{format}'")
        if self._backend.model is None:
            raise CheckpointError(f"{self.source} is already an ONNX model")
        with reading(self.source, outputs={"export": path}):
            if format == "hf":
                from dinokit.interop.hub_export import export_folder

                return export_folder(self.source, path)
            return export_onnx(self.source, path, opset).path

    def explain(self, image: Any, top: int = 3, query: int | None = None, layer: int | str | None = None,
                score: float = 0.3, boxes: Any = None, seed: int = 0) -> Any:
        """What the model did on one image, from its own forward: an `Explanation` (dinokit.explain;
        arrays in the image's pixels, `.figures()`, `.to_json()`, `.save(folder)`). `boxes`: ground
        truth for the denoising figure (a JSON file or a list of {"box", "label"})."""
        from dinokit.data.transforms import eval_transforms
        from dinokit.explain.build import explain_source

        return explain_source(self._backend, image, eval_transforms(self.config.data), self.device, boxes=boxes,
                              top=top, query=query, layer=layer, score=score, seed=seed, autocast=self._autocast())

    def _autocast(self) -> Any:
        from dinokit.infer.precision import autocast

        return autocast(self.precision, self.device)


def load(
    source: str | Path,
    device: str = "auto",
    precision: str | None = None,
    *,
    backend: str | None = None,
    image_size: int | None = None,
    quantize: str = "none",
    compile: bool = False,
) -> Detector:
    """A detector from a dinokit checkpoint, an official IDEA-Research/DINO checkpoint, a .onnx file,
    a model folder (`export(..., format="hf")`) or a Hub model `hf://owner/name[@revision]`.

    `quantize="int8"` runs on the CPU (dynamic int8 has no CUDA kernels): `device="auto"` then
    means the CPU, and an explicit accelerator is refused before anything is loaded.
    `precision` (fp32, bf16, fp16, auto; default: the checkpoint's `train.precision`) runs the torch
    model under autocast (see dinokit.infer.precision; fp16 needs CUDA). `image_size`
    replaces the test-time resize by "longest side to image_size" (an official checkpoint otherwise
    resizes as the official code: shorter side 800, longer side at most 1333).
    """
    from dinokit.checkpoint import require_checkpoint_file
    from dinokit.files import declare_inputs
    from dinokit.infer.precision import resolve_precision
    from dinokit.infer.predictor import load_backend
    from dinokit.infer.speed import check_quantize, int8_device
    from dinokit.interop.hub import resolve_source
    from dinokit.runtime.device import resolve_device

    if image_size is not None and image_size <= 0:
        raise ConfigError(f"--image-size must be positive, got {image_size}")
    path = resolve_source(source)  # hf://owner/name: fetched into the Hugging Face cache
    backend = backend or ("onnx" if path.suffix.lower() == ".onnx" else "torch")
    if backend not in ("torch", "onnx"):
        raise ConfigError(f"backend must be torch or onnx, got '{backend}'")
    quantize = check_quantize(quantize)
    if backend == "onnx" and (quantize != "none" or compile or precision not in (None, "fp32")):
        raise ConfigError("--quantize, --compile and precision apply to the torch backend, not to an ONNX model")
    if backend == "torch":
        require_checkpoint_file(path)
    declare_inputs(path)  # a command that loads a detector may not write over it
    dev = int8_device(device) if quantize == "int8" else resolve_device(device)
    if precision is not None:
        resolve_precision(precision, dev)  # a bad name or fp16 on a CPU fails before loading
    loaded = load_backend(path, backend, dev, quantize, compile)
    if image_size is not None:
        apply_dict(loaded.cfg, {"data": {"image_size": image_size, "eval_resize": "longest"}})
    chosen, note = ("fp32", "") if backend == "onnx" else resolve_precision(precision or loaded.cfg.train.precision, dev)
    return Detector(loaded, dev, path, chosen, note)


# --------------------------------------------------------------------------- training


@dataclasses.dataclass
class Run:
    """A finished training run: its folder and results."""

    dir: Path
    best: dict[str, Any]  # the best evaluation's metrics (AP, AP50, ..., step)
    history: list[dict[str, Any]]
    interrupted: bool = False
    steps: int = 0
    rank: int = 0

    @property
    def metrics(self) -> Any:
        """Every evaluation as a pandas DataFrame (one row per evaluation)."""
        import pandas as pd

        return pd.DataFrame(self.history)

    def detector(self, device: str = "auto", **options: Any) -> Detector:
        """The run's best.pt (last.pt when it never evaluated), loaded for inference."""
        path = self.dir / "best.pt"
        return load(path if path.is_file() else self.dir / "last.pt", device, **options)


def train(
    data: str | None = None,
    preset: str | None = None,
    *,
    config: str | Path | None = None,
    resume: bool = False,
    overrides: Sequence[str] = (),
    progress: bool = False,
    **fields: Any,
) -> Run:
    """Train as `dinokit train` does and block until done; returns the `Run`.

    `fields` are config fields by name, from any section (epochs=3, batch_size=4, lr=2e-4,
    weights="best.pt", ...); `overrides` are `section.field=value` strings (the CLI's --set).
    Without a preset, `resume` continues the run's own configuration, and a detector in
    `weights` (dinokit or official) brings its configuration.
    """
    from dinokit.files import reading
    from dinokit.training.trainer import train as run_training

    with reading(config):  # the run (a resumed one too) may not replace the files it starts from
        cfg = train_config(data, preset, config, resume, list(overrides), fields)
        with reading(None if resume else cfg.model.weights):  # resuming does not read --weights
            result = run_training(cfg, resume=resume, progress=progress)
    return Run(result.run_dir, result.best, result.history, result.interrupted, result.steps, result.rank)


def train_config(
    data: str | None, preset: str | None, config: str | Path | None, resume: bool, overrides: list[str],
    fields: dict[str, Any],
) -> Config:
    """preset (or the resumed run's / --weights detector's config) -> YAML -> fields + overrides.

    A budget field (epochs, steps, time_budget) is the budget, as the CLI's flag is: the other
    budgets are switched off (`budget_flags`), so `train(steps=200)` runs 200 steps, not "200 steps
    or the preset's minutes". Fields and overrides are merged, then validated together."""
    budget = {k: fields[k] for k in ("epochs", "steps", "time_budget") if fields.get(k) is not None}
    fields = {**fields, **budget_flags(**budget)}
    sections = _by_section({"data": data, **fields})
    train_fields = sections.setdefault("train", {})
    base = None
    if resume:
        from dinokit.runtime.rundir import find_resume_dir

        out = train_fields.get("out") or "runs"
        run = find_resume_dir(out, train_fields.get("name") or "")
        train_fields.update(out=out, name=run.name)  # the trainer looks in the same place
        if preset is None:  # continue with the run's own configuration
            base = load_yaml(run / "config.yaml", Config())
    elif preset is None and sections.get("model", {}).get("weights") is not None:
        from dinokit.interop.load import detector_checkpoint

        ckpt = detector_checkpoint(sections["model"]["weights"], overrides)
        base = Config.from_dict(ckpt["config"]) if ckpt is not None else None
    cfg = base if base is not None else load_preset(preset or "tiny")
    if config is not None:
        cfg = load_yaml(Path(config), cfg)
    merged = {s: dict(v) for s, v in sections.items() if v}
    for section, values in overrides_dict(overrides).items():
        merged.setdefault(section, {}).update(values)
    return apply_dict(cfg, merged)


def _by_section(fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{'epochs': 3, 'lr': 1e-4} -> {'train': {'epochs': 3, 'lr': 1e-4}}; None values are left out."""
    sections = [f.name for f in dataclasses.fields(Config)]
    owners: dict[str, list[str]] = {}
    for section in sections:
        for f in dataclasses.fields(getattr(Config(), section)):
            owners.setdefault(f.name, []).append(section)
    out: dict[str, dict[str, Any]] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if name not in owners:
            raise ConfigError(f"unknown option '{name}' (a field of {', '.join(sections)})")
        if len(owners[name]) > 1:
            raise ConfigError(f"'{name}' is a field of {' and '.join(owners[name])}: give it as section.{name}=... in overrides")
        out.setdefault(owners[name][0], {})[name] = value
    return out
