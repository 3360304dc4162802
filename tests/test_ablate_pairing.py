"""Curves stored with the trial and rebuilt from storage alone; paired seeds: arms of one seed
start from the same shared weights and see the same batches."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import torch

from dinokit.ablate import study as study_mod
from dinokit.ablate.arms import Arm, ArmSet, leave_one_out
from dinokit.ablate.cli import base_config
from dinokit.ablate.pairing import SharedInit
from dinokit.ablate.report import render
from dinokit.config import apply_overrides, load_preset

SMALL = [
    "data.shapes_train=8", "data.shapes_val=4", "data.image_size=64", "data.min_size=32",
    "model.backbone=mobilenet_v3_small", "model.enc_layers=1", "model.dec_layers=2",
    "model.num_queries=20", "model.dn_number=6", "train.batch_size=4", "train.threads=1",
]


def _curve_trainer(cfg: Any, on_epoch: Any = None, **kw: Any) -> Any:
    """A stand-in trainer: AP50 rises with the step, faster for the arm without CDN."""
    rows, every = [], cfg.train.eval_every_steps
    speed = 2.0 if cfg.model.denoising == "dn" else 1.0
    for step in range(every, cfg.train.steps + 1, every):
        ap50 = min(1.0, speed * step / 100 + cfg.train.seed / 1000)
        row = {"step": step, "AP": ap50 / 2, "AP50": ap50, "AP75": ap50 / 3, "APs": 0.0,
               "train_seconds": float(step), "elapsed": float(step)}
        rows.append(row)
        on_epoch(dict(row))
    run_dir = Path(cfg.train.out) / "train" / cfg.train.name
    run_dir.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(history=rows, run_dir=run_dir, best=rows[-1], params=10, interrupted=False,
                           steps=cfg.train.steps)


def test_every_arm_is_evaluated_at_the_same_marks_and_the_curve_is_stored(tmp_path: Path) -> None:
    cfg = base_config("tiny", "shapes", [], 50, None)
    assert cfg.train.eval_every_steps == 5 and cfg.train.step_seeded  # ten marks by default
    spec = study_mod.AblationSpec("curves", leave_one_out(["no-cdn"]), [1, 2], cfg, tmp_path / "curves",
                                  trainer=_curve_trainer)
    study_mod.run(spec, progress=False, say=lambda _: None)
    _, records = study_mod.read_trials(spec.storage, "curves")
    assert len(records) == 4
    for rec in records:
        assert [h["step"] for h in rec["attrs"]["history"]] == list(range(5, 51, 5))
    import optuna

    trials = optuna.load_study(study_name="curves", storage=spec.storage).get_trials()
    fast = next(t for t in trials if t.params == {"arm": "no-cdn", "seed": 2})
    assert fast.intermediate_values[30] == pytest.approx(0.602)  # trial.report per mark: AP50

    # the report from storage alone: curves and steps to AP50 0.3 (full: step 30, no-cdn: 15)
    data, summary = render(spec.storage, "curves", tmp_path / "again")
    assert len(data.history) == 4 * 10
    s = summary.set_index("arm")
    assert s.loc["full", "steps_to_30_mean"] == 30 and s.loc["no-cdn", "steps_to_30_mean"] == 15
    assert s.loc["no-cdn", "dsteps_to_30"] == -15 and s.loc["no-cdn", "dsteps_to_30_n"] == 2
    assert (tmp_path / "again" / "forest.png").is_file()


# --------------------------------------------------------------------------- pairing


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DINOKIT_CACHE")
    os.environ["DINOKIT_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("DINOKIT_CACHE", None)
    else:
        os.environ["DINOKIT_CACHE"] = old


def _watch(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record each training step's batch and, at the first step, the model's initial weights."""
    from dinokit.training import trainer as trainer_mod

    seen: list[dict[str, Any]] = []
    monkeypatch.undo()  # one recorder at a time
    original = trainer_mod.Trainer._train_step

    def step(self: Any, images: torch.Tensor, masks: torch.Tensor, targets: list[dict]) -> Any:
        entry: dict[str, Any] = {"images": images.clone(), "boxes": [t["boxes"].clone() for t in targets]}
        if not seen:
            entry["weights"] = {k: v.detach().clone() for k, v in self.raw_model.state_dict().items()}
        seen.append(entry)
        return original(self, images, masks, targets)

    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", step)
    return seen


def _train(arm: Arm, base: Any, out: Path, monkeypatch: pytest.MonkeyPatch, paired: bool) -> list[dict[str, Any]]:
    from dinokit.ablate.arms import arm_config
    from dinokit.training.trainer import train

    cfg = arm_config(base, arm)
    cfg.train.step_seeded, cfg.train.out, cfg.train.name = paired, str(out), f"{arm.name}-{paired}"
    seen = _watch(monkeypatch)
    init = SharedInit(dict(base.model.__dict__), cfg.train.seed) if paired else None
    train(cfg, progress=False, init_model=init)
    return seen


def test_arms_of_one_seed_share_weights_and_batches(tmp_path: Path, cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base = apply_overrides(load_preset("tiny"), SMALL)
    base.train.steps, base.train.eval_every_steps = 5, 5
    # static queries add learned query parameters; no denoising draws no noise: neither touches
    # the backbone, both change how much of the random stream model building and steps consume
    arms = ArmSet((Arm("full"), Arm("static-no-dn", {"queries": "static", "denoising": "none"})))
    full = _train(arms.get("full"), base, tmp_path, monkeypatch, paired=True)
    other = _train(arms.get("static-no-dn"), base, tmp_path, monkeypatch, paired=True)
    shared = [k for k, v in full[0]["weights"].items()
              if k in other[0]["weights"] and other[0]["weights"][k].shape == v.shape]
    assert any(k.startswith("backbone") for k in shared) and any("encoder" in k for k in shared)
    for k in shared:
        assert torch.equal(full[0]["weights"][k], other[0]["weights"][k]), k
    assert len(full) == len(other) == 5
    for a, b in zip(full, other):  # the same images, augmented the same way, every step
        assert torch.equal(a["images"], b["images"])
        assert all(torch.equal(x, y) for x, y in zip(a["boxes"], b["boxes"]))

    # control: without pairing the same two arms drift apart (weights or later batches differ)
    free = _train(arms.get("static-no-dn"), base, tmp_path, monkeypatch, paired=False)
    same_weights = all(torch.equal(full[0]["weights"][k], free[0]["weights"][k]) for k in shared)
    same_batches = all(torch.equal(a["images"], b["images"]) for a, b in zip(full, free))
    assert not (same_weights and same_batches)
