"""The model card (README.md) of a model folder: Hub metadata, then what a user needs to know.

The metadata block is built with huggingface_hub's `ModelCardData` / `EvalResult` (the Hub's own
model-card conventions: `library_name`, `tags`, `pipeline_tag`, `model-index` with the metrics)
and the card is parsed back with `ModelCard` before it is written, so a card the Hub would
misread is an error here. The text says: the classes, the data, the best evaluation (AP, AP50,
... and per class), the F1-optimal threshold, the training configuration, the versions, intended
use and limits, and, for a trial of an ablation study, the study's verdicts (read from the
study's report.md, found through the trial's `train.tags` and `train.out`).
"""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any

from dinokit.config import Config
from dinokit.interop.hub import CARD_REPO as REPO
from dinokit.version import __version__

SUMMARY = (("AP", "AP (IoU 0.50:0.95)", "mAP"), ("AP50", "AP50", "mAP@0.5"), ("AP75", "AP75", "mAP@0.75"),
           ("APs", "AP small", "mAP_small"), ("APm", "AP medium", "mAP_medium"), ("APl", "AP large", "mAP_large"),
           ("AR100", "AR@100", "mAR@100"))
TAGS = ["object-detection", "dino", "detr", "dinokit", "pytorch", "safetensors"]


def _defined(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _points(value: Any) -> str:
    """A COCO fraction as points with one decimal ("n/a" where COCO leaves it undefined)."""
    return f"{100 * float(value):.1f}" if _defined(value) else "n/a"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]


def data_name(cfg: Config) -> str:
    return "shapes" if cfg.data.data == "shapes" else Path(cfg.data.data).name or str(cfg.data.data)


def card_metadata(ckpt: dict[str, Any], cfg: Config, name: str) -> Any:
    """The metadata block as huggingface_hub's ModelCardData (model-index: the best evaluation,
    in COCO points, on the validation split of the training data)."""
    from huggingface_hub import EvalResult, ModelCardData

    metrics, data = ckpt.get("metrics") or {}, data_name(cfg)

    def result(kind: str, label: str, value: float) -> EvalResult:
        return EvalResult(task_type="object-detection", task_name="Object Detection", dataset_type=data,
                          dataset_name=data, dataset_split="val", metric_type=kind, metric_name=label,
                          metric_value=round(100 * float(value), 2))

    results = [result(kind, label, metrics[key]) for key, label, kind in SUMMARY if _defined(metrics.get(key))]
    results += [result("mAP", f"AP ({cls})", ap) for cls, ap in (metrics.get("per_class") or {}).items() if _defined(ap)]
    tags = TAGS + [f"preset-{cfg.train.tags['preset']}"] * ("preset" in cfg.train.tags)
    return ModelCardData(library_name="dinokit", pipeline_tag="object-detection", tags=tags, model_name=name,
                         eval_results=results or None)


def training_data(cfg: Config) -> list[str]:
    d = cfg.data
    if d.data == "shapes":
        return [f"dinokit's built-in synthetic **shapes** data: {d.shapes_train} training and {d.shapes_val} "
                f"validation images of {d.shapes_size} px (seed {d.shapes_seed}), generated on the fly "
                "(`dinokit data shapes`)."]
    return [f"`{d.data}` (a COCO, VOC or YOLO dataset on the trainer's machine; its training split for "
            "training, its validation split for the numbers below)."]


def evaluation(ckpt: dict[str, Any], classes: list[str]) -> list[str]:
    metrics = ckpt.get("metrics") or {}
    if not any(_defined(metrics.get(key)) for key, _, _ in SUMMARY):
        return ["No evaluation is stored with these weights (a checkpoint from before the first evaluation)."]
    step = metrics.get("step", ckpt.get("step"))
    out = [f"COCO box metrics of the best evaluation (step {step}) on the validation split, in points:", ""]
    out += _table([label for _, label, _ in SUMMARY], [[_points(metrics.get(key)) for key, _, _ in SUMMARY]])
    per_class, prf = metrics.get("per_class") or {}, metrics.get("per_class_prf") or {}
    threshold = metrics.get("score_threshold")
    out += ["", "Per class (AP; precision, recall and F1 at the F1-optimal score threshold, IoU 0.5):", ""]
    rows = [[str(i), name, _points(per_class.get(name)), *(_points((prf.get(name) or {}).get(k)) for k in "PR"),
             _points((prf.get(name) or {}).get("F1"))] for i, name in enumerate(classes)]
    out += _table(["id", "class", "AP", "P", "R", "F1"], rows)
    missing = [name for name in classes if name not in per_class]
    if missing:
        out += ["", f"n/a: no instance of {', '.join(missing)} in the validation split."]
    out += ["", "### Score threshold", ""]
    if _defined(threshold):
        out.append(f"F1-optimal score threshold: **{float(threshold):.4g}** (macro P {_points(metrics.get('P'))}, "
                   f"R {_points(metrics.get('R'))}, F1 {_points(metrics.get('F1'))}). `dinokit predict` and "
                   "`Detector.predict` keep detections scoring at least this unless given `--score`.")
    else:
        out.append("No F1-optimal threshold: no score gave a true positive at the best evaluation; "
                   "predict uses 0.3 unless given `--score`.")
    return out


def configuration(cfg: Config) -> list[str]:
    m, t = cfg.model, cfg.train
    budget = f"{t.steps} steps" if t.steps else f"{t.time_budget:g} minutes" if t.time_budget else f"{t.epochs} epochs"
    rows = [
        ["preset", cfg.train.tags.get("preset", "none (a configuration file)")],
        ["backbone", f"{m.backbone} ({m.num_feature_levels} feature levels)"],
        ["transformer", f"hidden {m.hidden_dim}, {m.nheads} heads, {m.enc_layers} encoder / {m.dec_layers} decoder "
                        f"layers, FFN {m.dim_feedforward}, {m.num_queries} queries"],
        ["DINO switches", f"queries {m.queries}, denoising {m.denoising} ({m.dn_number} queries), "
                          f"look-forward-twice {str(m.lft).lower()}, attention {m.attention}"],
        ["classification loss", cfg.loss.cls],
        ["images", f"longest side {cfg.data.image_size} px at evaluation ({cfg.data.eval_resize} resize)"],
        ["budget", f"{budget}, batch {t.batch_size}"],
        ["optimiser", f"AdamW lr {t.lr:g} (backbone {t.lr_backbone:g}), weight decay {t.weight_decay:g}, "
                      f"{t.lr_schedule} schedule, EMA {str(t.ema).lower()}"],
        ["precision, seed", f"{t.precision}, {t.seed}"],
    ]
    return _table(["setting", "value"], rows) + ["", "The whole configuration is in `config.json` (`config`)."]


def study_section(cfg: Config, source: Path | None) -> list[str]:
    """For a trial of an ablation study: which trial, and the study's verdicts from its report."""
    tags = cfg.train.tags
    if "study" not in tags or "arm" not in tags:
        return []
    study = tags["study"]
    out = ["## Ablation study", "",
           f"These weights are trial `{tags['arm']}` (seed {tags.get('seed', '?')}) of the ablation study "
           f"`{study}` (`dinokit ablate`)."]
    places = [Path(cfg.train.out) / "report.md"]
    if source is not None:  # runs/ablate/<study>/<trial>/best.pt, wherever the runs folder went
        places.append(Path(source).resolve().parent.parent / "report.md")
    report = next((p for p in places if p.is_file()), None)
    if report is None:
        return out + ["", f"The study's report was not found (looked for {', '.join(str(p) for p in places)}), "
                          "so its verdicts are not shown here."]
    sections = report_sections(report.read_text(encoding="utf-8"))
    if "Verdicts" in sections:
        return out + ["", "The study's verdicts (from its report):", "", *sections["Verdicts"]]
    out += ["", f"The study's report has no verdicts yet (render them with `dinokit ablate report {study} "
                "--margin 1`); its results table:", ""]
    return out + sections.get("Results", ["(no results table)"])


def report_sections(text: str) -> dict[str, list[str]]:
    """A report.md's `## ` sections by title, without its pictures (their files stay behind)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        elif current is not None and not line.startswith("!["):
            current.append(line)
    return {k: _trimmed(v) for k, v in sections.items()}


def _trimmed(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def limits(cfg: Config, classes: list[str]) -> list[str]:
    out = [f"- Detects the {len(classes)} classes above and nothing else; every box gets one of them.",
           f"- Images are resized to a longest side of {cfg.data.image_size} px: objects much smaller than "
           "that scale's feature stride are easily missed.",
           "- The numbers above come from the validation split of the training data. Measure on your own "
           "images (`dinokit eval OUT/ --data YOUR_DATA`) before relying on it.",
           "- Not for decisions about people's safety, health, rights or access without a human in the loop "
           "and an evaluation on the data it will meet."]
    if cfg.data.data == "shapes":
        out.append("- Trained on synthetic shapes: a demonstration model, not for photographs.")
    if cfg.train.tags.get("preset") == "tiny":
        out.append("- The `tiny` preset is a small CPU model (small backbone, few layers, small images): far "
                   "below the paper's DINO-4scale R50 in accuracy.")
    return out


def versions(ckpt: dict[str, Any]) -> list[str]:
    import torch

    trained = ckpt.get("versions") or {}
    shown = ", ".join(f"{k} {v}" for k, v in trained.items()) or "unknown"
    try:
        import safetensors

        fmt = f"safetensors {safetensors.__version__}"
    except ImportError:
        fmt = "safetensors"
    return [f"- trained with: {shown}",
            f"- exported with: dinokit {__version__}, torch {torch.__version__}, {fmt}, Python {platform.python_version()}"]


def model_card(ckpt: dict[str, Any], cfg: Config, name: str, source: Path | None = None) -> str:
    """The card's text, metadata block first; checked by parsing it back with ModelCard."""
    from huggingface_hub import ModelCard

    classes = list(ckpt["classes"])
    meta = card_metadata(ckpt, cfg, name)
    body = [
        f"# {name}", "",
        f"A [DINO](https://arxiv.org/abs/2203.03605) object detector (DETR with improved denoising anchor boxes), "
        f"trained and exported with dinokit {__version__}: "
        f"{len(classes)} classes, {cfg.model.backbone} backbone.", "",
        "## Use", "", "```python", "import dinokit", "",
        f'detector = dinokit.load("hf://{REPO}")  # or the folder itself: dinokit.load("{name}/")',
        'for det in detector.predict("photos/"):', "    print(det.to_pandas())", "```", "",
        "```bash", f"dinokit predict photos/ --checkpoint hf://{REPO}", "```", "",
        "Files: `config.json` (configuration, classes, COCO category ids, score threshold), `model.safetensors` "
        "(the inference weights; no pickle), this card.", "",
        "## Classes", "", ", ".join(f"`{c}`" for c in classes), "",
        "## Training data", "", *training_data(cfg), "",
        "## Evaluation", "", *evaluation(ckpt, classes), "",
        "## Training configuration", "", *configuration(cfg), "",
        *(lines + [""] if (lines := study_section(cfg, source)) else []),
        "## Intended use and limits", "",
        "Object detection on images like the training data's, with these classes. Limits:", "",
        *limits(cfg, classes), "",
        "## Versions", "", *versions(ckpt), "",
    ]
    text = f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(body)
    card = ModelCard(text)  # parses the metadata block back; raises on a malformed one
    if meta.eval_results and len(card.data.eval_results or []) != len(meta.eval_results):
        raise ValueError("the model card's model-index did not parse back")
    return str(card)
