"""One typed configuration for the whole toolkit: model, data and training.

Every DINO switch lives in `ModelConfig` and is read by the one module it changes. Presets are
complete configurations; YAML files and `--set a.b=value` overrides start from a preset.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from dinokit.config_rules import rule_problem
from dinokit.errors import DinokitError
from dinokit.yamlfile import read_mapping

QueryMode = Literal["mixed", "pure", "static"]
DenoisingMode = Literal["cdn", "dn", "none"]
NegTarget = Literal["background", "closest-gt"]
AttentionKind = Literal["deformable", "dense"]
ClassLoss = Literal["focal", "vfl", "ia-bce", "mal", "stable"]
Precision = Literal["fp32", "bf16", "fp16", "auto"]
LrShape = Literal["step", "cosine", "linear"]
CompileChoice = Literal["auto", True, False]  # auto: where measured faster (training/compiled.py)


SECTIONS = ("model", "data", "train", "loss")  # the Config fields, in the order files list them


class ConfigError(DinokitError, ValueError):
    """A configuration value a user gave is invalid; the message names the field."""


@dataclass
class ModelConfig:
    """The detector. Defaults are the DINO paper's / official DINO-4scale R50 values."""

    num_classes: int = 91
    backbone: str = "resnet50"
    weights: str | None = None  # torchvision weights name, "imagenet", or a local file path
    num_feature_levels: int = 4
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.0
    # recompute each encoder FFN's (tokens, dim_feedforward) hidden layer in the backward instead of
    # keeping it: less training memory for one more linear1 per layer; outputs are unchanged
    checkpoint_ffn: bool = False
    enc_points: int = 4
    dec_points: int = 4
    num_queries: int = 900
    pe_temperature: float = 20.0
    # --- the switches (see README.md, "The model") ---
    queries: QueryMode = "mixed"
    denoising: DenoisingMode = "cdn"
    neg_target: NegTarget = "background"
    lft: bool = True
    dn_draws: int = 1
    attention: AttentionKind = "deformable"
    # --- training-only aids (off = the paper's DINO; dropped at inference, see model/groups.py) ---
    query_groups: int = 1  # Group DETR: K matching queries repeated in this many groups (1 = off)
    one_to_many_queries: int = 0  # H-DETR: extra queries matched to each box repeated k times (0 = off)
    one_to_many_k: int = 6  # H-DETR's k: repeats of each ground-truth box for the one-to-many queries
    # --- denoising ---
    dn_number: int = 100
    label_noise: float = 0.5
    box_noise: float = 0.4  # official DINO_4scale.py value (lambda1); negatives use [lambda1, 2*lambda1)
    # --- matcher and loss ---
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    loss_class: float = 1.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    # --- matching-cost aids (off = DINO's cost; loss/matcher.py, training/phases.py) ---
    position_cost: float = 0.0  # Stable-DINO: class probability x ((GIoU + 1) / 2)^this in the cost (0 = off; 0.5)
    iou_cost_from: float = 0.0  # DEIMv2: budget fraction from which the cost is -(p x IoU^power) (0 = off; 0.78)
    iou_cost_power: float = 4.0  # DEIMv2's iou_order_alpha
    # --- inference ---
    num_select: int = 300
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class LossConfig:
    """The classification loss on the matched logits (see loss/classification.py)."""

    cls: ClassLoss = "focal"  # focal (DINO), vfl (RT-DETR), ia-bce (Align-DETR), mal (DEIM), stable (Stable-DINO)
    vfl_alpha: float = 0.75  # RT-DETR's negative weight for vfl
    iabce_alpha: float = 0.25  # Align-DETR: positive target = score^alpha * IoU^(1 - alpha)
    mal_gamma: float = 1.5  # DEIM: positive target = IoU^gamma, negative weight score^gamma
    stable_power: float = 2.0  # Stable-DINO: positive target = IoU^power, scaled so an image's best is 1


@dataclass
class DataConfig:
    """Where images come from and how they are sized."""

    data: str = "shapes"  # "shapes", a COCO/VOC/YOLO folder, or a COCO JSON file
    image_size: int = 800  # longest side after resizing at evaluation (training jitters below it)
    min_size: int = 0  # smallest random training size (0: 0.6 x image_size)
    # test-time resize: "longest" (longest side to image_size) or "official" (IDEA-Research/DINO:
    # shorter side 800, longer side at most 1333; what converted official checkpoints use)
    eval_resize: str = "longest"
    augment: bool = True
    crop: float = 0.0  # probability of a random crop in training (DETR's and DINO's use 0.5)
    # training-only aids that mix in other training images (data/mixing.py; 0 = off)
    mosaic: float = 0.0  # DEIM's dense one-to-one: probability of a 2 x 2 mosaic of four images (0.5)
    copy_blend: float = 0.0  # DEIMv2's Copy-Blend: probability of pasting objects of other images (0.5)
    copy_blend_objects: int = 3  # objects pasted per Copy-Blend
    workers: int = 0
    skip_bad_images: bool = False
    shapes_train: int = 800
    shapes_val: int = 100
    shapes_size: int = 128
    shapes_seed: int = 0


@dataclass
class TrainConfig:
    """The optimisation loop and where its results go."""

    epochs: int = 12
    steps: int = 0  # >0: stop after this many optimiser steps (overrides epochs)
    time_budget: float = 0.0  # minutes; >0: stop when the wall clock passes it
    batch_size: int = 2
    lr: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    clip_grad: float = 0.1
    lr_schedule: LrShape = "step"  # step: x0.1 at lr_drop (the paper's); cosine/linear: down to 0 at the end
    lr_drop: float = 11 / 12  # fraction of the run after which lr is multiplied by 0.1 (step only)
    warmup_steps: int = 0
    ema: bool = False
    ema_decay: float = 0.9997
    # DEIM's final phase: from this budget fraction on, no strong augmentation and the EMA
    # restarted (started if train.ema is off); 0 = off (DEIMv2: 50 of 58 epochs, 0.86)
    no_aug_from: float = 0.0
    seed: int = 42
    deterministic: bool = False
    device: str = "auto"
    out: str = "runs"
    name: str = ""
    eval_every: int = 1  # epochs
    eval_every_steps: int = 0  # >0: evaluate every N optimiser steps instead (curves, studies)
    step_seeded: bool = False  # reseed from (seed, step) after each step: runs that differ share draws
    threads: int = 0  # 0: torch's default
    compile: CompileChoice = False  # torch.compile the training step: true, false, or auto (where it wins)
    precision: Precision = "fp32"  # autocast of train/eval/predict; auto: bf16 where the device does it natively
    tensorboard: bool = True  # write <run>/tensorboard logs when the tensorboard package is installed
    mlflow: bool = False  # log the run to MLflow too (extra [mlflow]; training/mlflow_log.py)
    mlflow_uri: str = ""  # MLflow tracking URI; "": $MLFLOW_TRACKING_URI, else a sqlite store in the run folder
    mlflow_experiment: str = ""  # MLflow experiment; "": "dinokit" (a study's trials: the study's name)
    # labels of the run (text -> text): the preset it started from, a study trial's study/arm/seed;
    # the loggers record them (MLflow tags) and a model card reads them
    tags: dict[str, str] = field(default_factory=dict)
    checkpoint_every: float = 10.0  # minutes; >0: also write last.pt inside an epoch this often
    checkpoint_every_steps: int = 0  # >0: also write last.pt every N optimiser steps
    patience: int = 0  # >0: stop after this many evaluations in a row without a better AP (best.pt kept)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Config":
        cfg = cls()
        apply_dict(cfg, raw)
        return cfg


# --------------------------------------------------------------------------- presets

PRESETS: dict[str, dict[str, Any]] = {
    # The CPU default: small backbone, small images, few layers. Its recipe (lr, warm-up, clipping,
    # 100 queries, 30 denoising queries, DEIM's MAL loss) is the best region of
    # `dinokit tune --space tune_tiny_recipe` (17 trials of 400 steps). Measured with
    # `benchmarks/train_default.py --steps 400`: AP50 0.06 / 0.26 / 0.42 / 0.59 at step 100 / 200 /
    # 300 / 400 (415 s of training on 2 cores at 109 fp32 GFLOP/s); the paper's recipe it replaced
    # (60 queries, lr 4e-4, focal loss) reached 0.008 / 0.08 / 0.20 / 0.27. With the fused AdamW
    # (same seed, another session's faster host) 0.04 / 0.24 / 0.39 / 0.53 in 230 s. Over seeds
    # 42-45 step 400 gives AP50 0.53 / 0.62 / 0.62 / 0.58 (mean 0.59); `model.query_groups: 3` gave
    # 0.59 / 0.62 / 0.60 / 0.62 (mean 0.61) at 1.35x the seconds per step, so it stays off here.
    "tiny": {
        "model": {
            "backbone": "resnet18",
            "num_feature_levels": 3,
            "hidden_dim": 64,
            "nheads": 4,
            "enc_layers": 2,
            "dec_layers": 3,
            "dim_feedforward": 256,
            "enc_points": 4,
            "dec_points": 4,
            "num_queries": 100,
            "dn_number": 30,
            "num_select": 100,
        },
        # No random crop (data.crop 0.5 gave AP50 0.46 against 0.53 at step 400, seed 42, and did
        # not help on the raccoon photographs either).
        "data": {"image_size": 128, "min_size": 96},
        # A wall-clock budget so that the bare `dinokit train` ends within 10 minutes on 2 cores
        # (--epochs or --steps replace it); the lr drops after 11/12 of the budget.
        "train": {"epochs": 12, "time_budget": 9.0, "batch_size": 8, "lr": 2e-3, "lr_backbone": 2e-3,
                  "warmup_steps": 70, "clip_grad": 0.5},
        # A training-only aid (DEIM's matchability-aware loss): +13.6 AP50 over focal at 400 steps
        # (3 paired seeds); the paper-faithful studies pin focal in their `base:`.
        "loss": {"cls": "mal"},
    },
    # The paper's: ImageNet-pretrained ResNet-50 (FrozenBatchNorm, frozen stem), 91 COCO classes,
    # and its training augmentation's random crop on half the images.
    "r50-4scale": {"model": {"weights": "imagenet"}, "data": {"crop": 0.5}},
    "r50-5scale": {"model": {"weights": "imagenet", "num_feature_levels": 5}, "data": {"crop": 0.5}},
}


def load_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    cfg = Config()
    apply_dict(cfg, copy.deepcopy(PRESETS[name]))
    cfg.train.tags["preset"] = name
    return cfg


# --------------------------------------------------------------------------- YAML and overrides


def save_yaml(cfg: Config, path: Path) -> None:
    """Write the config atomically: `--resume` reads it back, so it is never half a file."""
    from dinokit.files import write_text

    write_text(path, yaml.safe_dump(plain(cfg.to_dict()), sort_keys=False))


def load_yaml(path: Path, base: Config | None = None) -> Config:
    """Read a config file on top of `base` (a preset); unknown keys are errors."""
    raw = read_mapping(path, "config file", ConfigError, "a mapping of sections", empty_ok=True)
    cfg = base if base is not None else Config()
    apply_dict(cfg, raw)
    return cfg


def apply_overrides(cfg: Config, items: list[str]) -> Config:
    """Apply `section.field=value` strings (value parsed as YAML: numbers, bools, lists), all at
    once: the merged result is validated, so their order never matters."""
    return apply_dict(cfg, overrides_dict(items))


def overrides_dict(items: list[str]) -> dict[str, dict[str, Any]]:
    """`section.field=value` strings -> {section: {field: value}} (a later item wins)."""
    merged: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"--set key must be section.field (e.g. model.hidden_dim), got '{key}'")
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        merged.setdefault(parts[0], {})[parts[1]] = value
    return merged


def apply_dict(cfg: Config, raw: dict[str, Any]) -> Config:
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section '{section}' (model, data, train, loss)")
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{section}' must be a mapping")
        target = getattr(cfg, section)
        hints = typing.get_type_hints(type(target))
        for name, value in values.items():
            if name not in hints:
                raise ConfigError(f"unknown option '{section}.{name}'")
            current = getattr(target, name)
            if isinstance(value, dict) and isinstance(current, dict):  # a mapping (train.tags) adds to what is there
                value = {**current, **value}
            setattr(target, name, _coerce(f"{section}.{name}", value, hints[name]))
    validate(cfg)
    return cfg


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            shown = (str(a).lower() if isinstance(a, bool) else str(a) for a in args)  # YAML's true/false
            raise ConfigError(f"{name} must be one of {', '.join(shown)}, got '{value}'")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{name} must be a list of {len(args)} numbers")
        return tuple(_coerce(name, v, a) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got '{value}'")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got '{value}'")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got '{value}'")
        return float(value)
    if hint is str:
        if isinstance(value, (list, dict)) or value is None:
            raise ConfigError(f"{name} must be a text value, got '{value}'")
        return str(value)
    return value


def validate(cfg: Config) -> None:
    """Every field against its rule (config_rules.RULES), then the checks across fields."""
    for section in SECTIONS:
        values = getattr(cfg, section)
        for f in dataclasses.fields(values):
            name = f"{section}.{f.name}"
            problem = rule_problem(name, getattr(values, f.name))
            if problem:
                raise ConfigError(f"{name} {problem}")
    m = cfg.model
    if m.hidden_dim % m.nheads:
        raise ConfigError(f"model.hidden_dim ({m.hidden_dim}) must be divisible by model.nheads ({m.nheads})")
    if m.hidden_dim % 2:
        raise ConfigError("model.hidden_dim must be even (sine position embedding)")
    if m.query_groups > 1 and m.queries == "pure":  # pure content comes from the shared proposals
        raise ConfigError("model.query_groups > 1 needs learned content queries (model.queries mixed or static)")


def check_budget(t: TrainConfig) -> None:
    """The one budget rule: steps > 0 stops after that many steps, time_budget > 0 after that many
    minutes (whichever comes first), otherwise `epochs` epochs; a 0 means "not this budget", and
    a run with no budget at all is refused (checked when training starts, not per override)."""
    if t.epochs == 0 and t.steps == 0 and t.time_budget == 0:
        raise ConfigError(
            "nothing to train, the training budget is zero: set train.epochs, train.steps or train.time_budget above 0"
        )


def budget_flags(epochs: int | None = None, steps: int | None = None,
                 time_budget: float | None = None) -> dict[str, Any]:
    """The train-section values that one budget flag (--epochs, --steps or --time-budget) sets: the
    other budgets are switched off so that the flag means exactly what it says; 0 is refused."""
    given = [(n, v) for n, v in (("--epochs", epochs), ("--steps", steps), ("--time-budget", time_budget))
             if v is not None]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(n for n, _ in given)} both set the budget; choose one budget")
    for flag, value in given:
        if not value > 0:
            raise ConfigError(f"{flag} must be positive, got {value}")
    if epochs is not None:
        return {"epochs": epochs, "steps": 0, "time_budget": 0.0}
    if steps is not None:
        return {"steps": steps, "time_budget": 0.0}
    if time_budget is not None:
        return {"time_budget": float(time_budget), "steps": 0}
    return {}


def total_steps(t: TrainConfig, steps_per_epoch: int) -> int:
    """Optimiser steps the budget allows; 0 when only the wall clock (time_budget) bounds the run."""
    if t.steps > 0:
        return t.steps
    return 0 if t.time_budget > 0 else t.epochs * steps_per_epoch


def plain(obj: Any) -> Any:
    """Tuples become lists so that safe_dump writes plain YAML (and values compare as data)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def diff_configs(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Names of the fields whose values differ between two config dicts (for checkpoint checks)."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        name = f"{prefix}{key}"
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_configs(va, vb, name + ".")
        elif plain(va) != plain(vb):
            out.append(f"{name} ({va} vs {vb})")
    return out
