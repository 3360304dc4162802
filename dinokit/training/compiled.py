"""The training step, eager or compiled: `train.compile` (auto | true | false).

Compiled, torch.compile (inductor) takes the model's forward and the criterion's tensor parts
(the matcher's costs before the Hungarian step, the matched and denoising losses after it) each
whole, without graph breaks; the Hungarian assignment itself runs on the host between them, by
design. Shapes are bucketed so that a run compiles a handful of graphs, not one per batch:

- images are padded (bottom and right, masked as padding, so the model ignores it) to a small
  fixed set of side lengths: at most `MAX_SIDES` of the multi-scale training sizes;
- the ground truth is padded to a power-of-two number of slots per image (GroundTruth). The
  denoising groups are counted on those slots (`dn_number // slots`), so a compiled run can have
  fewer denoising groups than an eager one on a batch whose box count is not a power of two.

Graphs are static (`dynamic=False`): every bucket is its own graph, compiled once, and inductor's
FX graph and AOTAutograd caches keep them on disk under `$DINOKIT_CACHE/compile` (unless
TORCHINDUCTOR_CACHE_DIR is set), so a second run, or the next ablation trial of the same
architecture, loads them instead of compiling.

`auto` compiles only where a measurement said the compiled step wins (`MEASURED_WINS`); none is
recorded yet, so today `auto` means eager everywhere (benchmarks/speed.py --compile-matrix is the
measurement that decides).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from dinokit.config import ConfigError, DataConfig
from dinokit.loss.criterion import SetCriterion
from dinokit.model.denoising import pad_targets

COMPILE_CHOICES = ("auto", "true", "false")
MAX_SIDES = 3  # image side buckets: at most 3 x 3 image shapes per ground-truth bucket
RECOMPILE_LIMIT = 64  # graphs per compiled function (buckets); torch's default 8 would fall back to eager
# (device type, precision) pairs where a quiet-machine measurement showed the compiled training
# step faster than eager (benchmarks/speed.py --compile-matrix). Empty until measured: `auto` stays off.
MEASURED_WINS: frozenset[tuple[str, str]] = frozenset()


def compile_choice(value: Any) -> str:
    """`train.compile` as auto | true | false (YAML booleans and the old bool field included)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    if text not in COMPILE_CHOICES:
        raise ConfigError(f"train.compile must be one of {', '.join(COMPILE_CHOICES)}, got '{value}'")
    return text


def resolve_compile(
    value: Any, device: torch.device, precision: str, wins: frozenset[tuple[str, str]] = MEASURED_WINS
) -> tuple[bool, str]:
    """(compile the training step?, a one-line note for `auto`, "" otherwise). `auto` compiles
    where `wins` holds (device type, resolved precision): only what was measured to pay."""
    choice = compile_choice(value)
    if choice != "auto":
        return choice == "true", ""
    on = (device.type, precision) in wins
    why = "measured faster" if on else "not measured faster"
    return on, f"compile auto: {'on' if on else 'off'} (compiled {precision} training step on {device.type}: {why})"


def compile_cache_dir() -> Path:
    """Where compiled graphs persist: $DINOKIT_CACHE/compile (or ~/.cache/dinokit/compile)."""
    from dinokit.data.shapes import cache_root

    return cache_root() / "compile"


def use_disk_cache() -> Path:
    """Point inductor's on-disk caches (FX graphs, AOTAutograd joint graphs) at dinokit's cache,
    unless TORCHINDUCTOR_CACHE_DIR names another one, and make sure they are on. (torch itself
    writes its default, /tmp/torchinductor_<user>, into the variable once it has looked.)"""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get("TORCHINDUCTOR_CACHE_DIR", default_cache_dir()) == default_cache_dir():
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir())

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def compile_model(fn: Any, **options: Any) -> Any:
    """torch.compile with static shapes (one graph per bucket); `options` go to torch.compile."""
    return torch.compile(fn, **{"dynamic": False, **options})


def gt_slots(count: int) -> int:
    """Ground-truth slots for a batch whose largest image has `count` boxes: the next power of two."""
    return 1 << max(0, count - 1).bit_length()


class ShapeBuckets:
    """Pads a batch's images to the smallest side bucket that holds them (masks True on padding)."""

    def __init__(self, sides: list[int]) -> None:
        self.sides = sorted(set(sides))

    @classmethod
    def for_data(cls, cfg: DataConfig, max_sides: int = MAX_SIDES) -> "ShapeBuckets":
        """At most `max_sides` of the multi-scale training sizes, evenly spaced, the largest kept."""
        from dinokit.data.transforms import train_sizes

        sizes = train_sizes(cfg)
        if len(sizes) > max_sides:
            step = (len(sizes) - 1) / (max_sides - 1)
            sizes = [sizes[round(i * step)] for i in range(max_sides)]
        return cls(sizes)

    def side(self, n: int) -> int:
        """The bucket for a side of n pixels (above the largest: the next multiple of 32)."""
        for s in self.sides:
            if n <= s:
                return s
        return -(-n // 32) * 32

    def pad(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """images (B, 3, H, W), masks (B, H, W) -> padded to (bucket(H), bucket(W))."""
        h, w = images.shape[-2:]
        bh, bw = self.side(h), self.side(w)
        if (bh, bw) == (h, w):
            return images, masks
        images = torch.nn.functional.pad(images, (0, bw - w, 0, bh - h))
        masks = torch.nn.functional.pad(masks, (0, bw - w, 0, bh - h), value=True)
        return images, masks


class TrainingStep:
    """Forward and loss as the trainer runs them: `step(images, masks, targets) -> (outputs,
    losses)`. Compiled, the batch is bucketed first and the criterion gets the padded targets."""

    def __init__(
        self, model: nn.Module, criterion: SetCriterion, compiled: bool = False,
        buckets: ShapeBuckets | None = None, compile_fn: Callable[..., Any] | None = None,
    ) -> None:
        self.model, self.criterion, self.compiled = model, criterion, compiled
        self.buckets = buckets
        self.forward: Callable[..., Any] = model
        if compiled:
            use_disk_cache()
            compile_fn = compile_fn or compile_model
            self.forward = compile_fn(model)
            compile_criterion(criterion, compile_fn)

    def __call__(self, images: Tensor, masks: Tensor, targets: list[dict[str, Tensor]]) -> tuple[dict, dict]:
        if not self.compiled:
            outputs = self.model(images, masks, targets)
            return outputs, self.criterion(outputs, targets)
        with record_function("dinokit.data"):
            if self.buckets is not None:
                images, masks = self.buckets.pad(images, masks)
            counts = [len(t["labels"]) for t in targets]
            gt = pad_targets(targets, images.device, gt_slots(max(counts, default=0)))
        outputs = self.forward(images, masks, gt)
        return outputs, self.criterion(outputs, targets, gt)


def compile_criterion(criterion: SetCriterion, compile_fn: Callable[..., Any] = compile_model) -> SetCriterion:
    """Replace the criterion's tensor parts by compiled ones (instance attributes, so the class and
    other criteria are untouched): the costs before the host's Hungarian step, the losses after."""
    criterion.matcher.costs = compile_fn(criterion.matcher.costs)  # type: ignore[method-assign]
    criterion.matched_loss = compile_fn(criterion.matched_loss)  # type: ignore[method-assign]
    criterion.denoising_loss = compile_fn(criterion.denoising_loss)  # type: ignore[method-assign]
    return criterion
