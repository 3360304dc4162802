"""The compiled training step (training/compiled.py): what `train.compile` picks, the shape buckets,
no graph break in the model's forward or the criterion's tensor parts, and compiled == eager."""

from __future__ import annotations

import pytest
import torch

from dinokit.config import ConfigError, DataConfig
from dinokit.loss.criterion import build_criterion
from dinokit.model.denoising import pad_targets
from dinokit.model.dino import build_model
from dinokit.training import compiled
from tests.model_helpers import make_targets, micro_config

CPU = torch.device("cpu")


def test_compile_choice_auto_follows_the_measured_wins_only():
    assert compiled.resolve_compile(True, CPU, "fp32") == (True, "")
    assert compiled.resolve_compile("false", CPU, "fp32") == (False, "")
    on, note = compiled.resolve_compile("auto", CPU, "fp32")  # nothing measured yet: off, and said
    assert on is False and note.startswith("compile auto: off")
    wins = frozenset({("cpu", "bf16")})
    assert compiled.resolve_compile("auto", CPU, "bf16", wins)[0] is True
    assert compiled.resolve_compile("auto", CPU, "fp32", wins)[0] is False  # another precision
    assert compiled.resolve_compile("auto", torch.device("cuda"), "bf16", wins)[0] is False
    with pytest.raises(ConfigError, match="train.compile must be one of auto, true, false, got 'yes'"):
        compiled.compile_choice("yes")


def test_config_takes_auto_and_the_old_booleans():
    from dinokit.config import Config, apply_dict

    for value in ("auto", True, False):
        cfg = Config()
        apply_dict(cfg, {"train": {"compile": value}})
        assert cfg.train.compile == value
    with pytest.raises(ConfigError, match="train.compile must be one of auto, true, false, got 'sometimes'"):
        apply_dict(Config(), {"train": {"compile": "sometimes"}})


def test_buckets_pad_images_and_ground_truth_to_a_few_shapes():
    assert [compiled.gt_slots(n) for n in (0, 1, 2, 3, 5, 8, 9)] == [1, 1, 2, 4, 8, 8, 16]
    buckets = compiled.ShapeBuckets.for_data(DataConfig(image_size=800, min_size=480))
    assert buckets.sides == [480, 640, 800]  # 11 training sizes thinned to 3, the largest kept
    images, masks = torch.rand(2, 3, 500, 333), torch.zeros(2, 500, 333, dtype=torch.bool)
    masks[1, :, 300:] = True
    padded, pmask = buckets.pad(images, masks)
    assert padded.shape == (2, 3, 640, 480) and pmask.shape == (2, 640, 480)
    assert torch.equal(padded[:, :, :500, :333], images) and padded[:, :, 500:].abs().sum() == 0
    assert pmask[:, 500:].all() and pmask[:, :, 333:].all() and torch.equal(pmask[:, :500, :333], masks)
    assert buckets.side(900) == 928  # beyond the largest: the next multiple of 32


def _micro(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cfg = micro_config(**overrides)
    return cfg, build_model(cfg, load_weights=False).train(), build_criterion(cfg)


def test_no_graph_break_in_the_forward_or_the_criterion_parts():
    """torch._dynamo.explain on the hot path: the model's forward on padded ground truth, the
    matcher's costs, the matched loss and the denoising loss are one graph each."""
    cfg, model, criterion = _micro()
    images, masks = torch.rand(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.bool)
    gt = pad_targets(make_targets([2, 3]), CPU, slots=4)
    out = model(images, masks, gt)
    src, hit = criterion.match(out["pred_logits"], out["pred_boxes"], gt)
    parts = {
        "forward": (model, (images, masks, gt)),
        "costs": (criterion.matcher.costs, (out["pred_logits"], out["pred_boxes"], gt)),
        "matched_loss": (criterion.matched_loss, (out["pred_logits"], out["pred_boxes"], gt, src, hit, torch.tensor(5.0))),
        "denoising_loss": (criterion.denoising_loss, (out["dn"], torch.tensor(5.0))),
    }
    for name, (fn, args) in parts.items():
        torch._dynamo.reset()
        report = torch._dynamo.explain(fn)(*args)
        assert (report.graph_count, report.graph_break_count) == (1, 0), (name, [b.reason for b in report.break_reasons])


def test_compiled_step_equals_eager_and_caches_its_graphs(tmp_path, monkeypatch):
    """Inductor (C++ kernels), one step of the smallest model: the losses and every gradient equal
    eager's to float tolerance, and the compiled graphs land in $DINOKIT_CACHE/compile."""
    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    import torch._inductor.config as inductor_config

    # the denoising noise from torch's generator, not inductor's own: the same draws as eager
    # (inductor_config.patch, not monkeypatch: undoing a setattr on the config module deletes the
    # option, and every later inductor compile in the process fails)
    with inductor_config.patch(fallback_random=True):
        torch._dynamo.reset()
        overrides = {"num_feature_levels": 1, "dec_layers": 1}
        images = torch.rand(2, 3, 60, 64, generator=torch.Generator().manual_seed(1))
        masks = torch.zeros(2, 60, 64, dtype=torch.bool)
        targets = make_targets([2, 3])
        results = []
        for use_compile in (False, True):
            cfg, model, criterion = _micro(**overrides)
            step = compiled.TrainingStep(model, criterion, use_compile, compiled.ShapeBuckets([64]))
            if not use_compile:  # eager on the same bucketed batch: the shapes are the compiled ones
                step.compiled, step.forward = True, model
            torch.manual_seed(5)  # the same denoising noise
            outputs, losses = step(images, masks, targets)
            losses["loss"].backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            results.append(({k: v.detach() for k, v in losses.items()}, outputs["pred_boxes"].detach(), grads))
    (eager_losses, eager_boxes, eager_grads), (comp_losses, comp_boxes, comp_grads) = results
    assert eager_losses.keys() == comp_losses.keys()
    for k in eager_losses:
        torch.testing.assert_close(comp_losses[k], eager_losses[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    torch.testing.assert_close(comp_boxes, eager_boxes, rtol=1e-4, atol=1e-5)
    assert eager_grads.keys() == comp_grads.keys() and len(eager_grads) > 20
    for n, ref in eager_grads.items():  # relative to each gradient's size: float sums reorder
        assert (comp_grads[n] - ref).norm() <= 1e-3 * ref.norm() + 1e-7, n
    assert compiled.compile_cache_dir() == tmp_path / "compile"
    assert list((tmp_path / "compile").rglob("*.py")), "no compiled graph was written to the cache"


def test_disk_cache_goes_under_dinokit_cache_unless_inductor_has_its_own(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("DINOKIT_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what torch writes there itself
    assert compiled.use_disk_cache() == tmp_path / "compile"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's: kept
    assert compiled.use_disk_cache() == tmp_path / "mine"
