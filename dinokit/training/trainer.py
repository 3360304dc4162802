"""The training loop: budget (epochs, steps or minutes), evaluation, checkpoints and resume.

One `Trainer` object holds the run's state, so that saving `last.pt` and resuming from it are
two mirror-image functions (`pack` / `restore` in training/state.py). Under `torchrun` the same code runs
in every process; only rank 0 writes files and prints, and every decision to stop is agreed on
by all processes so that none is left waiting in a collective.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function

from dinokit.config import Config, check_budget, save_yaml, total_steps
from dinokit.training import distributed as dist_utils
from dinokit.checkpoint import save_checkpoint
from dinokit.files import declare_inputs
from dinokit.training.console import TrainConsole
from dinokit.runtime.device import process_device
from dinokit.infer.evaluator import run_evaluation, write_run_diagnostics
from dinokit.infer.precision import autocast, grad_scaler, resolve_precision
from dinokit.data.coco import preflight_images, same_images_note
from dinokit.interop.load import detector_checkpoint, load_checkpoint, load_initial_weights
from dinokit.training.optim import LrSchedule, apply_gradients, build_ema, build_optimizer
from dinokit.training.rng import capture_rng, nondeterminism_error, seed_everything
from dinokit.training.loggers import Loggers, open_loggers
from dinokit.training import losslog, state as run_state
from dinokit.training.samples import TrainLoader
from dinokit.training.signals import StopRequest, StopRun
from dinokit.runtime.rundir import RUN_FILES, find_resume_dir, new_run_dir, safe_name
from dinokit.training.patience import patience_reason
from dinokit.training.phases import LatePhases
from dinokit.training.plots import plot_curves, plot_results, write_metrics_csv
from dinokit.training.compiled import ShapeBuckets, TrainingStep, resolve_compile
from dinokit.errors import DataError, DinokitError

MAX_BAD_STEPS = 20  # consecutive non-finite gradient steps before giving up


class Diverged(DinokitError):
    """Training diverged: MAX_BAD_STEPS steps in a row with non-finite gradients from `step` on
    (1-based). A study records it as an outcome of its arm, not as a failed run (ablate/study.py)."""

    def __init__(self, step: int, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.run_dir: Path | None = None  # set by the trainer: the run folder of the diverged run


@dataclass
class TrainResult:
    run_dir: Path
    best: dict[str, Any]
    history: list[dict[str, Any]]
    params: int
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM; last.pt holds the state to resume
    steps: int = 0  # optimiser steps done in total (all sessions of the run)
    rank: int = 0  # the process's rank under torchrun; only rank 0's best/history are filled


def train(
    cfg: Config,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    init_model: Callable[[nn.Module, Any], None] | None = None,
) -> TrainResult:
    """Train a DINO model as `cfg` describes; `resume` continues `<out>/train/<name>/last.pt`
    (the latest run when `cfg.train.name` is empty). `on_epoch` gets each evaluation's history
    row (rank 0 only). `init_model(model, model_cfg)` may overwrite initial weights of a fresh
    run (ablations: the weights the arms share come from one reference build)."""
    cfg = copy.deepcopy(cfg)
    check_budget(cfg.train)
    if cfg.train.mlflow:  # a missing package fails before any data or run folder is made
        from dinokit.training.mlflow_log import require_mlflow

        require_mlflow()
    device = process_device(cfg.train.device)
    info = dist_utils.init_distributed(device)
    try:
        with StopRequest() as stop:
            trainer = Trainer(cfg, device, info, progress, on_epoch, stop, resume, init_model)
            return trainer.run(resume)
    finally:
        dist_utils.cleanup_distributed(info)


class Trainer:
    def __init__(
        self, cfg: Config, device: torch.device, info: dist_utils.DistInfo, progress: bool,
        on_epoch: Callable[[dict[str, Any]], None] | None, stop: StopRequest, resume: bool = False,
        init_model: Callable[[nn.Module, Any], None] | None = None,
    ) -> None:
        from dinokit.data.coco import build_dataset, resolve_source
        from dinokit.data.mixing import MixedSamples
        from dinokit.data.transforms import collate
        from dinokit.loss.criterion import build_criterion
        from dinokit.model.dino import build_model

        self.cfg, self.device, self.info, self.on_epoch, self.stop = cfg, device, info, on_epoch, stop
        t = cfg.train
        self.precision, precision_note = resolve_precision(t.precision, device, training=True)
        self.compiled, compile_note = resolve_compile(t.compile, device, self.precision)
        self.scaler = grad_scaler(self.precision, device)  # enabled for fp16 on CUDA only
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        seed_everything(t.seed, t.deterministic, device)
        if not info.is_main:
            dist_utils.barrier(info)  # rank 0 prepares (e.g. writes the shapes dataset) first
        source = resolve_source(cfg.data)
        self.train_set = build_dataset(source, cfg.data, "train", train=True)
        self.val_set = build_dataset(source, cfg.data, "val", train=False) if info.is_main else None
        if info.is_main:
            dist_utils.barrier(info)
        if len(self.train_set) == 0:
            raise DataError(f"the training split of {cfg.data.data} has no images")
        sets = [self.train_set] + ([self.val_set] if self.val_set is not None else [])
        image_note = preflight_images(sets, cfg.data.skip_bad_images)  # every image decodes, before step 1
        split_note = same_images_note(source)
        self.classes, self.cat_ids = list(source.class_names), [int(c) for c in source.cat_ids]
        cfg.model.num_classes = len(self.classes)

        # resuming: last.pt provides every weight, so pretrained ones need not be fetched; a whole
        # detector as --weights (dinokit or official checkpoint) is loaded after building
        detector = None if resume else detector_checkpoint(cfg.model.weights, [f"model.nheads={cfg.model.nheads}"])
        self.raw_model: nn.Module = build_model(cfg.model, load_weights=not resume and detector is None)
        weights_note = load_initial_weights(self.raw_model, detector, self.classes) if detector else ""
        if init_model is not None and not resume and detector is None:
            init_model(self.raw_model, cfg.model)
        self.raw_model.to(device)
        self.criterion = build_criterion(cfg.model, cfg.loss).to(device)
        self.params = sum(p.numel() for p in self.raw_model.parameters())
        self.optimizer = build_optimizer(self.raw_model, t)
        self.schedule = LrSchedule(self.optimizer, t.warmup_steps, t.lr_drop, t.lr_schedule)
        self.ema = build_ema(self.raw_model, t.ema_decay) if t.ema else None
        self.phases = LatePhases({"iou_cost": cfg.model.iou_cost_from, "no_aug": t.no_aug_from})
        seed_everything(t.seed + info.rank)  # augmentation streams differ per process

        self.train_samples = MixedSamples(self.train_set, cfg.data)  # mosaic / Copy-Blend when switched on
        self.batches = TrainLoader(self.train_samples, t.batch_size, cfg.data.workers, t.seed, info.world_size,
                                   info.rank, collate)
        self._restart_batches = False  # a phase changed the samples: the next batches need a new iterator
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.total_steps = total_steps(t, self.steps_per_epoch)
        self.budget_s = t.time_budget * 60.0

        self.step = self.epoch = self.epoch_step = 0
        self.elapsed_before = 0.0
        self.eval_seconds = 0.0  # wall time spent evaluating (all sessions): train_seconds leaves it out
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.loss_curve: list[list[float]] = []
        self.log_sums: dict[str, float] = {}
        self.log_count = 0
        self.losslog = losslog.LossLog()  # this interval's loss terms, on the device until read
        self.lr = t.lr
        self._time_fraction = 0.0  # fraction of the time budget spent (0 without one)
        self._bad_steps = 0
        self._saved_step = -1
        self._evaluated_step = -1  # the step of the last evaluation, on every rank
        self._saved_at = time.monotonic()
        self.console = TrainConsole(info.is_main, progress, self.total_steps or None, self.budget_s)
        for note in (weights_note, image_note, split_note, precision_note, compile_note):
            if note:
                self.console.message(note)
        self.model: nn.Module = self.raw_model
        self.board: Loggers | None = None  # TensorBoard and/or MLflow (training/loggers.py), opened with the run folder

    # ------------------------------------------------------------------ run

    def run(self, resume: bool) -> TrainResult:
        t = self.cfg.train
        run_dir = None
        if self.info.is_main:
            run_dir = find_resume_dir(t.out, t.name) if resume else new_run_dir(t.out, safe_name(t.name))
        self.run_dir = Path(dist_utils.broadcast_object(str(run_dir), self.info))
        if resume:  # the run's files are rewritten: none may be a file the run started from (--config)
            declare_inputs(outputs={f"--resume ({name})": self.run_dir / name for name in RUN_FILES})
            self._restore(load_checkpoint(self.run_dir / "last.pt"))
        if self.info.is_main:
            save_yaml(self.cfg, self.run_dir / "config.yaml")
        self.board = open_loggers(self.run_dir, self.cfg, self.console.message) if self.info.is_main else None
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # every DINO switch keeps all parameters in the graph (even for batches without boxes)
            self.model = DistributedDataParallel(self.raw_model, device_ids=ids)
        buckets = ShapeBuckets.for_data(self.cfg.data) if self.compiled else None
        self.step_fn = TrainingStep(self.model, self.criterion, self.compiled, buckets)
        self.t0 = time.monotonic()
        where = f"resuming {self.run_dir} at step {self.step}" if resume else f"training into {self.run_dir}"
        self.console.message(
            f"{where} ({self.params / 1e6:.2f} M parameters, {self.info.world_size} process(es), {self.device})"
        )
        try:
            with self.console:
                reason = self._loop()
        except KeyboardInterrupt:  # a second Ctrl-C: save what we have without collectives
            self._save_last(collective=False)
            return self._interrupted()
        except StopRun:  # the caller ended the run (a pruned trial): nothing to resume
            (self.run_dir / "last.pt").unlink(missing_ok=True)
            if self.board is not None:
                self.board.close("stopped")
            raise
        except Exception as exc:  # bad data, divergence, out of memory: keep the steps done so far
            if self.board is not None:
                self.board.close("failed")
            saved = ""
            if self.step > 0 and self._saved_step != self.step:
                self._save_last(collective=False)
                saved = (f" (saved {self.run_dir / 'last.pt'} at step {self.step}: continue with "
                         f"dinokit train --resume --out {t.out} --name {self.run_dir.name})")
            if isinstance(exc, Diverged):
                exc.run_dir = self.run_dir
            refused = nondeterminism_error(exc, self.device) if t.deterministic else None
            if refused is not None:  # an op without a deterministic kernel: one line, not a traceback
                raise type(refused)(f"{refused}{saved}") from exc
            exc.args = (f"{exc}{saved}",) if saved else exc.args
            raise
        if reason == "interrupt":
            self._save_last()
            return self._interrupted()
        if self._evaluated_step != self.step:  # the same on every rank (only rank 0 keeps a history)
            self._evaluate()
        if self._saved_step != self.step:
            self._save_last()
        return self._result(interrupted=False)

    def _interrupted(self) -> TrainResult:
        """last.pt is saved; the caller reports (the CLI prints how to resume)."""
        return self._result(interrupted=True)

    def _result(self, interrupted: bool) -> TrainResult:
        self._read_losses()
        if self.board is not None:
            self.board.close("interrupted" if interrupted else "finished")
        return TrainResult(
            self.run_dir, dict(self.best), list(self.history), self.params, interrupted, self.step, self.info.rank
        )

    def _loop(self) -> str:
        """Train until the budget is spent ("budget") or a stop was requested ("interrupt")."""
        t = self.cfg.train
        while True:
            if self.total_steps and self.step >= self.total_steps:
                return "budget"
            for images, masks, targets in self.batches.epoch(self.epoch, self.epoch_step):
                reason = self._should_stop()
                if reason:
                    return reason
                self._train_step(images, masks, targets)
                if t.eval_every_steps > 0 and self.step % t.eval_every_steps == 0 and self._evaluate():
                    return "patience"
                if t.step_seeded:  # the next batch's augmentation and the next step's noise
                    seed_everything((t.seed * 1_000_003 + self.step * 101 + self.info.rank) % 2**31)
                if self._checkpoint_due():
                    self._save_last()
                if self.total_steps and self.step >= self.total_steps:
                    break
                if self._restart_batches:  # the rest of the epoch from a loader made after the change
                    self._restart_batches = False
                    break
            if self.epoch_step >= self.steps_per_epoch:
                self.epoch += 1
                self.epoch_step = 0
                stop = t.eval_every_steps <= 0 and self.epoch % max(1, t.eval_every) == 0 and self._evaluate()
                self._save_last()
                if stop:
                    return "patience"

    def _checkpoint_due(self) -> bool:
        """train.checkpoint_every (minutes) or checkpoint_every_steps has come round inside an epoch."""
        t = self.cfg.train
        by_steps = t.checkpoint_every_steps > 0 and self.step % t.checkpoint_every_steps == 0
        by_time = t.checkpoint_every > 0 and time.monotonic() - self._saved_at >= 60.0 * t.checkpoint_every
        if self.info.enabled:  # every rank must take part in the save's collectives, or none
            by_time = dist_utils.any_flag([by_time], self.info, self.device)[0]
        return (by_steps or by_time) and self._saved_step != self.step

    def _should_stop(self) -> str | None:
        time_fraction = min(1.0, self._elapsed() / self.budget_s) if self.budget_s > 0 else 0.0
        signalled, time_fraction = dist_utils.max_values(
            [float(self.stop.signum is not None), time_fraction], self.info, self.device
        )
        self._time_fraction = time_fraction  # the same on every rank, so is the lr
        if signalled > 0:
            return "interrupt"
        return "budget" if time_fraction >= 1.0 else None

    def _train_step(self, images: torch.Tensor, masks: torch.Tensor, targets: list[dict[str, Any]]) -> None:
        t = self.cfg.train
        fraction = self.step / self.total_steps if self.total_steps else 0.0
        self.lr = self.schedule.update(self.step, max(fraction, self._time_fraction))
        for phase in self.phases.due(max(fraction, self._time_fraction)):
            self._start_phase(phase)
        with record_function("dinokit.data"):
            images, masks = images.to(self.device), masks.to(self.device)
            targets = [{k: v.to(self.device) if torch.is_tensor(v) else v for k, v in tg.items()} for tg in targets]
        self.model.train()
        with autocast(self.precision, self.device):  # the loss turns autocast off itself (fp32)
            _, losses = self.step_fn(images, masks, targets)  # eager, or compiled (training/compiled.py)
        finite = apply_gradients(losses["loss"], self.optimizer, self.scaler, self.raw_model, t.clip_grad)
        if finite:
            if self.ema is not None:
                with record_function("dinokit.optimiser"):
                    self.ema.update_parameters(self.raw_model)
            self._bad_steps = 0
        else:  # identical on every rank: gradients are all-reduced before the norm
            self._bad_steps += 1
            if self._bad_steps >= MAX_BAD_STEPS:
                start = self.step + 2 - MAX_BAD_STEPS  # self.step counts the steps before this one
                raise Diverged(start, f"training diverged at step {start}: {MAX_BAD_STEPS} steps in a row with "
                                      "non-finite gradients (lower train.lr?)")
        self.scaler.update()  # fp16: a smaller scale after an overflow, a larger one after enough clean steps
        self.step += 1
        self.epoch_step += 1
        self.losslog.push(self.step, self.epoch, self.lr, losses)
        self.console.advance(self.step, self._elapsed())
        if self.step == 1 or self.step % losslog.LOG_EVERY == 0 or self.console.line_due(self.step):
            self._read_losses()

    def _start_phase(self, phase: str, resumed: bool = False) -> None:
        """What a late phase (training/phases.py) changes from here on. `resumed`: re-entering it
        from last.pt before any batch is loaded (restore() then loads the saved EMA)."""
        if phase == "iou_cost":
            self.criterion.matcher.iou_cost = True
        elif phase == "no_aug":
            self.train_samples.strong(False)
            self._restart_batches = not resumed
            if self.ema is None or not resumed:  # restarted from the current weights
                self.ema = build_ema(self.raw_model, self.cfg.train.ema_decay)
        if not resumed:
            what = {"iou_cost": "the matching cost is IoU-heavy from here",
                    "no_aug": "no strong augmentation from here; EMA restarted"}[phase]
            self.console.message(f"step {self.step}: {what}")

    def _read_losses(self) -> None:
        """The buffered steps' loss terms, read on the host in one copy, into the means of the next
        evaluation, the loss curve, TensorBoard and the console."""
        rows = self.losslog.drain()
        self.log_count += losslog.fold(rows, self.log_sums, self.loss_curve, max(1, self.steps_per_epoch // 10))
        for row in rows if self.board is not None else []:
            self.board.step(row.step, row.values, row.lr)
        if rows:
            self.console.step(rows[-1].step, rows[-1].epoch, rows[-1].values["loss"], rows[-1].lr, self._elapsed())

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t0)

    # ------------------------------------------------------------------ evaluation and files

    def _evaluate(self) -> bool:
        """Evaluate (rank 0, EMA weights if kept), append a history row, write run files. Returns
        whether to stop early (train.patience), agreed on by every rank."""
        t = self.cfg.train
        started = time.monotonic()
        self._read_losses()
        logs = dist_utils.gather_objects((self.log_sums, self.log_count), self.info)
        if self.info.is_main:
            sums, count = losslog.merge(logs)
            eval_model = self.ema.module if self.ema is not None else self.raw_model
            metrics, detections = run_evaluation(
                eval_model, self.val_set, self.device, t.batch_size, self.cfg.model.num_select,
                workers=self.cfg.data.workers, precision=self.precision,
            )
            row: dict[str, Any] = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 3)}
            row["loss"] = sums.get("loss", float("nan")) / count if count else float("nan")
            row["lr"] = self.lr
            row.update({k: v for k, v in metrics.items() if not isinstance(v, dict)})  # per-class tables: in best
            row["elapsed"] = round(self._elapsed(), 2)
            row["train_seconds"] = round(self._elapsed() - self.eval_seconds - (time.monotonic() - started), 2)
            row.update({k: v / count for k, v in sorted(sums.items()) if k != "loss" and count})
            self.history.append(row)
            if not self.best or row["AP"] > self.best["AP"]:
                self.best = {**row, **{k: v for k, v in metrics.items() if isinstance(v, dict)}}
                save_checkpoint(self._checkpoint(full=False), self.run_dir / "best.pt")
                write_run_diagnostics(self.val_set.coco, detections, metrics, self.run_dir)
            stop = patience_reason(self.history, self.best, t.patience)
            if stop:
                row["stopped"] = stop
            write_metrics_csv(self.history, self.run_dir / "metrics.csv")
            plot_curves(self.history, self.loss_curve, self.run_dir / "curves.png")
            plot_results(self.history, self.run_dir / "results.png")
            self.console.evaluation(row)
            if stop:
                self.console.message(f"stopping early at step {self.step}: {stop}")
            if self.board is not None:
                self.board.evaluation(self.step, metrics)
            if self.on_epoch is not None:
                self.on_epoch(dict(row))
        self.log_sums, self.log_count = {}, 0
        self._evaluated_step = self.step
        stopping = bool(dist_utils.broadcast_object(bool(self.history and self.history[-1].get("stopped")), self.info))
        self.eval_seconds += time.monotonic() - started
        return stopping

    def _checkpoint(self, full: bool, rng: list[Any] | None = None) -> dict[str, Any]:
        return run_state.pack(self, full, rng)

    def _save_last(self, collective: bool = True) -> None:
        self._read_losses()  # the checkpoint holds the log sums and the loss curve
        rng = dist_utils.gather_objects(capture_rng(), self.info) if collective else [capture_rng()]
        if self.info.is_main:
            save_checkpoint(self._checkpoint(full=True, rng=rng), self.run_dir / "last.pt")
        self._saved_step = self.step
        self._saved_at = time.monotonic()
        if collective:
            dist_utils.barrier(self.info)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        run_state.restore(self, ckpt)
