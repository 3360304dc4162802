"""A training run's state in a checkpoint, and back: `pack` writes what `restore` reads.

Kept as one mirror-image pair beside the loop (training/trainer.py), so that a field added to
one side is seen missing from the other in the same screen. `last.pt` is the full state (exact
resume: optimiser, schedule, random streams, loader position, loss logs); `best.pt` is the weights
with the run's history and the score threshold that predict keeps by default.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from dinokit.checkpoint import check_compatible, make_checkpoint
from dinokit.config import Config
from dinokit.training.console import TrainConsole
from dinokit.training.distributed import DistInfo
from dinokit.training.optim import LrSchedule, build_ema
from dinokit.training.rng import capture_rng, restore_rng
from dinokit.training.samples import TrainLoader

OPTIMIZER_FIELDS = ("lr", "lr_backbone", "weight_decay")  # held in the optimiser's state, applied on resume


class Resumable(Protocol):
    """What `pack` and `restore` read and set of a run: training/trainer.py's `Trainer` has it.
    Described here, beside the two functions, so that this module needs nothing from the loop
    that calls it (the loop imports this module, never the other way)."""

    cfg: Config
    info: DistInfo
    console: TrainConsole
    raw_model: nn.Module
    ema: AveragedModel | None
    schedule: LrSchedule
    scaler: torch.amp.GradScaler
    batches: TrainLoader
    classes: list[str]
    cat_ids: list[int]
    steps_per_epoch: int
    step: int
    epoch: int
    epoch_step: int
    elapsed_before: float
    eval_seconds: float
    history: list[dict[str, Any]]
    best: dict[str, Any]
    loss_curve: list[list[float]]
    log_sums: dict[str, float]
    log_count: int
    _evaluated_step: int

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...  # read only: the loop's is an AdamW

    def _elapsed(self) -> float: ...


def next_loader_state(run: Resumable) -> torch.Tensor:
    """The loader generator's state that the next session's first iterator must start from:
    inside an epoch, the one this epoch's iterator started from; at its end, the current one."""
    inside = 0 < run.epoch_step < run.steps_per_epoch
    return run.batches.epoch_start_state if inside else run.batches.generator.get_state()


def pack(run: Resumable, full: bool, rng: list[Any] | None = None) -> dict[str, Any]:
    """The checkpoint of `run`: full (last.pt, to resume) or the weights with the history (best.pt)."""
    state: dict[str, Any] = {
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "epoch": run.epoch, "epoch_step": run.epoch_step, "step": run.step,
        "history": run.history, "best": run.best,
    }
    if not full:  # best.pt: the score predict keeps by default
        state["score_threshold"] = run.best.get("score_threshold")
    if full:
        state.update(
            optimizer=run.optimizer.state_dict(), scheduler=run.schedule.state_dict(),
            rng=rng or [capture_rng()], elapsed=run._elapsed(), eval_seconds=run.eval_seconds,
            loss_curve=run.loss_curve, log_sums=run.log_sums, log_count=run.log_count,
            loader_generator=next_loader_state(run), scaler=run.scaler.state_dict(),
            phases=run.phases.state_dict(),
        )
    return make_checkpoint(run.raw_model.state_dict(), run.cfg, run.classes, run.cat_ids, metrics=run.best, **state)


def restore(run: Resumable, ckpt: dict[str, Any]) -> None:
    """Mirror of `pack(full=True)`: continue exactly where last.pt left off."""
    check_compatible(ckpt, run.cfg, run.raw_model)
    run.raw_model.load_state_dict(ckpt["model"])
    # the optimiser's saved hyperparameters would win over a `--set train.lr=...` given at
    # resume; the configuration (what config.yaml says ran) wins instead
    wanted = [(g["lr"], g["weight_decay"]) for g in run.optimizer.param_groups]
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.schedule.load_state_dict(ckpt["scheduler"])
    for group, (lr, decay) in zip(run.optimizer.param_groups, wanted):
        group["weight_decay"] = decay
    run.schedule.base_lrs = [lr for lr, _ in wanted]
    saved = ckpt.get("config", {}).get("train", {})
    changed = [f"train.{k} {saved[k]} -> {getattr(run.cfg.train, k)}" for k in OPTIMIZER_FIELDS
               if k in saved and saved[k] != getattr(run.cfg.train, k)]
    if changed:
        run.console.message(f"resume: applying {', '.join(changed)}")
    if ckpt.get("scaler") and run.scaler.is_enabled():  # fp16 on CUDA: continue with the same loss scale
        run.scaler.load_state_dict(ckpt["scaler"])
    run.phases.load_state_dict(ckpt.get("phases") or {})
    for phase in run.phases.started:  # the phases already on (the final phase may create the EMA)
        run._start_phase(phase, resumed=True)
    if run.ema is not None:
        if ckpt.get("ema"):
            run.ema.load_state_dict(ckpt["ema"])
        else:  # EMA switched on at resume: start it from the current weights
            run.ema = build_ema(run.raw_model, run.cfg.train.ema_decay)
    run.step, run.epoch, run.epoch_step = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["epoch_step"])
    run.elapsed_before = float(ckpt.get("elapsed", 0.0))
    run.eval_seconds = float(ckpt.get("eval_seconds", 0.0))
    run.history, run.best = list(ckpt.get("history", [])), dict(ckpt.get("best", {}))
    run._evaluated_step = int(run.history[-1]["step"]) if run.history else -1
    run.loss_curve = [list(p) for p in ckpt.get("loss_curve", [])]
    run.log_sums, run.log_count = dict(ckpt.get("log_sums", {})), int(ckpt.get("log_count", 0))
    states = ckpt.get("rng") or []
    if run.info.rank < len(states):
        restore_rng(states[run.info.rank])
    if torch.is_tensor(ckpt.get("loader_generator")):  # worker seeds of the epoch in progress
        run.batches.generator.set_state(ckpt["loader_generator"].to(device="cpu", dtype=torch.uint8))
    if run.epoch_step >= run.steps_per_epoch:  # the epoch length changed (e.g. batch size)
        run.epoch, run.epoch_step = run.epoch + 1, 0
