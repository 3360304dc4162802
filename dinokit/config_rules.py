"""The allowed range or choices of every configuration field, as one table keyed by name.

`config.validate` checks each field against its rule whatever the value came from (a preset, a
YAML file, a CLI flag or `--set`). The table is data, so a test walks the config dataclasses and
fails for any field that has no rule here: a new field cannot reach PyTorch unchecked. Each rule
can also name values it refuses, which that test feeds through the CLI.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """Base: `problem` returns what is wrong with a value (None: fine); `refused` gives examples."""

    def problem(self, value: Any) -> str | None:
        return None

    def refused(self) -> list[Any]:
        return []


@dataclass(frozen=True)
class Int(Rule):
    """An integer in [low, high] (high None: no upper bound)."""

    low: int = 0
    high: int | None = None

    def problem(self, value: Any) -> str | None:
        if self.low <= value and (self.high is None or value <= self.high):
            return None
        if self.high is None:
            allowed = "positive" if self.low == 1 else f">= {self.low}"
        else:
            allowed = f"{self.low} or {self.high}" if self.high == self.low + 1 else f"in {self.low}..{self.high}"
        return f"must be {allowed}, got {value}"

    def refused(self) -> list[Any]:
        return [self.low - 1] + ([self.high + 1] if self.high is not None else [])


@dataclass(frozen=True)
class Num(Rule):
    """A finite number in [low, high]; `open_low` / `open_high` exclude the ends."""

    low: float = 0.0
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def problem(self, value: Any) -> str | None:
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            too_low = v <= self.low if self.open_low else v < self.low
            too_high = self.high is not None and (v >= self.high if self.open_high else v > self.high)
            if not math.isfinite(v) or too_low or too_high:
                return f"must be {self._describe()}, got {value}"
        return None

    def _describe(self) -> str:
        left = f"> {self.low:g}" if self.open_low else f">= {self.low:g}"
        if self.high is None:
            return left
        right = f"< {self.high:g}" if self.open_high else f"<= {self.high:g}"
        return f"{left} and {right}"

    def refused(self) -> list[Any]:
        out: list[Any] = [self.low if self.open_low else self.low - 1.0, float("nan")]
        if self.high is not None:
            out.append(self.high if self.open_high else self.high + 1.0)
        return out


@dataclass(frozen=True)
class Flag(Rule):
    """true or false: the type check in `config._coerce` is the whole rule."""


@dataclass(frozen=True)
class Choice(Rule):
    """One of fixed strings (the field's Literal type enforces it; this names them again)."""

    values: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        return None if value in self.values else f"must be one of {', '.join(self.values)}, got '{value}'"

    def refused(self) -> list[Any]:
        return ["no-such-choice"]


@dataclass(frozen=True)
class Text(Rule):
    """A string; `empty` says whether "" is allowed, `pattern` (a regex) must match the whole value."""

    empty: bool = True
    pattern: str = ""
    hint: str = ""

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None  # only Optional fields accept None (checked by the type)
        if not self.empty and value == "":
            return "must not be empty"
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"must be {self.hint or self.pattern}, got '{value}'"
        return None

    def refused(self) -> list[Any]:
        out: list[Any] = [] if self.empty else [""]
        return out + (["no such thing"] if self.pattern else [])


@dataclass(frozen=True)
class Labels(Rule):
    """A mapping of short text names to text values (run tags: MLflow caps keys at 250 characters)."""

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"must be a mapping of names to text, got '{value}'"
        for key, text in value.items():
            if not isinstance(key, str) or not re.fullmatch(r"[\w.\-/ ]{1,250}", key):
                return f"names must be 1-250 letters, digits, _ . - / or spaces, got '{key}'"
            if not isinstance(text, str):
                return f"values must be text (quote numbers), got {key}: {text!r}"
        return None

    def refused(self) -> list[Any]:
        return [{"a": 1}, {"bad:name": "x"}]


POSITIVE = Int(1)
COUNT = Int(0)  # 0 allowed: "none" or "off", as the field's comment says
WEIGHT = Num(0.0)  # a loss or cost weight: 0 switches the term off
FRACTION = Num(0.0, 1.0)

RULES: dict[str, Rule] = {
    # --- model
    "model.num_classes": POSITIVE,
    "model.backbone": Text(empty=False),
    "model.weights": Text(empty=False),
    "model.num_feature_levels": Int(1, 5),
    "model.hidden_dim": Int(2),
    "model.nheads": POSITIVE,
    "model.enc_layers": POSITIVE,
    "model.dec_layers": POSITIVE,
    "model.dim_feedforward": POSITIVE,
    "model.dropout": Num(0.0, 1.0, open_high=True),
    "model.checkpoint_ffn": Flag(),
    "model.enc_points": POSITIVE,
    "model.dec_points": POSITIVE,
    "model.num_queries": POSITIVE,
    "model.pe_temperature": Num(0.0, open_low=True),
    "model.queries": Choice(("mixed", "pure", "static")),
    "model.denoising": Choice(("cdn", "dn", "none")),
    "model.neg_target": Choice(("background", "closest-gt")),
    "model.lft": Flag(),
    "model.dn_draws": Int(1, 2),
    "model.attention": Choice(("deformable", "dense")),
    "model.dn_number": COUNT,
    "model.label_noise": FRACTION,
    "model.box_noise": Num(0.0),
    "model.focal_alpha": FRACTION,
    "model.focal_gamma": Num(0.0),
    "model.cost_class": WEIGHT,
    "model.cost_bbox": WEIGHT,
    "model.cost_giou": WEIGHT,
    "model.loss_class": WEIGHT,
    "model.loss_bbox": WEIGHT,
    "model.loss_giou": WEIGHT,
    "model.num_select": POSITIVE,
    "model.query_groups": POSITIVE,  # 1: off
    "model.one_to_many_queries": COUNT,  # 0: off
    "model.one_to_many_k": POSITIVE,
    "model.position_cost": Num(0.0),  # 0: off
    "model.iou_cost_from": Num(0.0, 1.0, open_high=True),  # 0: off
    "model.iou_cost_power": Num(0.0),
    "model.pixel_mean": FRACTION,
    "model.pixel_std": Num(0.0, open_low=True),
    # --- loss
    "loss.cls": Choice(("focal", "vfl", "ia-bce", "mal", "stable")),
    "loss.vfl_alpha": FRACTION,
    "loss.iabce_alpha": FRACTION,
    "loss.mal_gamma": Num(0.0),
    "loss.stable_power": Num(0.0),
    # --- data
    "data.data": Text(empty=False),
    "data.image_size": Int(32),  # the backbone's coarsest stride
    "data.min_size": COUNT,  # 0: 0.6 x image_size
    "data.augment": Flag(),
    "data.crop": FRACTION,  # probability; 0: no crop
    "data.mosaic": FRACTION,  # probability; 0: off
    "data.copy_blend": FRACTION,  # probability; 0: off
    "data.copy_blend_objects": POSITIVE,
    "data.eval_resize": Choice(("longest", "official")),
    "data.workers": COUNT,
    "data.skip_bad_images": Flag(),
    "data.shapes_train": POSITIVE,
    "data.shapes_val": POSITIVE,
    "data.shapes_size": Int(32),
    "data.shapes_seed": COUNT,
    # --- train (0 budgets mean "not this budget"; all three 0 is refused by `check_budget`)
    "train.epochs": COUNT,
    "train.steps": COUNT,
    "train.time_budget": Num(0.0),
    "train.batch_size": POSITIVE,
    "train.lr": Num(0.0, open_low=True),
    "train.lr_backbone": Num(0.0),  # 0 freezes the backbone in effect
    "train.weight_decay": Num(0.0),
    "train.clip_grad": Num(0.0),  # 0: no clipping
    "train.lr_schedule": Choice(("step", "cosine", "linear")),
    "train.lr_drop": FRACTION,
    "train.warmup_steps": COUNT,
    "train.ema": Flag(),
    "train.ema_decay": Num(0.0, 1.0, open_high=True),
    "train.no_aug_from": Num(0.0, 1.0, open_high=True),  # 0: off
    "train.seed": COUNT,
    "train.deterministic": Flag(),
    "train.device": Text(pattern=r"auto|cpu|(mps|cuda)(:\d+)?", hint="auto, cpu, cuda[:N] or mps"),
    "train.out": Text(empty=False),
    "train.name": Text(),
    "train.eval_every": POSITIVE,
    "train.eval_every_steps": COUNT,
    "train.patience": COUNT,
    "train.threads": COUNT,
    "train.compile": Choice(("auto", True, False)),  # auto: training/compiled.py decides
    "train.tensorboard": Flag(),
    "train.mlflow": Flag(),
    "train.mlflow_uri": Text(),
    "train.mlflow_experiment": Text(),
    "train.tags": Labels(),
    "train.precision": Choice(("fp32", "bf16", "fp16", "auto")),  # fp16 on a CPU: refused by infer.precision
    "train.step_seeded": Flag(),
    "train.checkpoint_every": Num(0.0),  # minutes; 0: only at epoch ends
    "train.checkpoint_every_steps": COUNT,
}


def rule_problem(name: str, value: Any) -> str | None:
    """What is wrong with `value` for field `name` ("section.field"), or None."""
    rule = RULES.get(name)
    return rule.problem(value) if rule is not None else None
