"""Optimiser groups, the budget-driven lr schedule and the EMA, on toy modules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dinokit.config import Config, ConfigError, TrainConfig, apply_overrides, validate
from dinokit.training.optim import LrSchedule, build_ema, build_optimizer


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
        self.head = nn.Linear(3, 2)
        self.backbone[0].weight.requires_grad_(False)  # a frozen parameter
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def test_backbone_gets_its_own_lr_and_frozen_params_are_left_out():
    model = Toy()
    opt = build_optimizer(model, TrainConfig(lr=1e-3, lr_backbone=1e-5, weight_decay=0.05))
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["transformer"]["lr"] == 1e-3 and groups["backbone"]["lr"] == 1e-5
    assert {id(p) for p in groups["backbone"]["params"]} == {
        id(model.backbone[0].bias), id(model.backbone[1].weight), id(model.backbone[1].bias)}
    assert len(groups["transformer"]["params"]) == 2 and groups["transformer"]["weight_decay"] == 0.05


def test_fused_adamw_on_the_cpu_steps_as_the_per_parameter_loop():
    torch.manual_seed(0)
    model, twin = Toy(), Toy()
    twin.load_state_dict(model.state_dict())
    cfg = TrainConfig(lr=1e-2, lr_backbone=1e-3, weight_decay=0.05)
    fused = build_optimizer(model, cfg)
    groups = [[p for n, p in twin.named_parameters() if p.requires_grad and n.startswith("backbone.") == bb]
              for bb in (False, True)]
    loop = torch.optim.AdamW([{"params": groups[0], "lr": 1e-2}, {"params": groups[1], "lr": 1e-3}],
                             weight_decay=0.05, foreach=False)
    assert fused.param_groups[0]["fused"] is True
    x = torch.randn(5, 3)
    for _ in range(3):
        for m, opt in ((model, fused), (twin, loop)):
            opt.zero_grad()
            m.head(m.backbone(x)).square().sum().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_warmup_then_drop():
    opt = build_optimizer(Toy(), TrainConfig(lr=1e-3, lr_backbone=1e-4))
    sched = LrSchedule(opt, warmup_steps=4, lr_drop=0.75)
    lrs = [sched.update(step, step / 10) for step in range(10)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[4:8] == pytest.approx([1e-3] * 4)
    assert lrs[8:] == pytest.approx([1e-4] * 2)  # progress 0.8 >= 0.75
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-5)  # the backbone group drops too
    state = sched.state_dict()
    again = LrSchedule(build_optimizer(Toy(), TrainConfig(lr=1e-3)), 4, 0.75)
    again.load_state_dict(state)
    assert again.update(10, 0.0) == pytest.approx(1e-4)  # a drop survives resume


@pytest.mark.parametrize("shape, expected", [
    ("cosine", [0.5 * (1 + math.cos(math.pi * p)) for p in (0.0, 0.25, 0.5, 0.75, 1.0)]),
    ("linear", [1.0, 0.75, 0.5, 0.25, 0.0]),
])
def test_cosine_and_linear_decay_to_zero_over_the_budget(shape, expected):
    opt = build_optimizer(Toy(), TrainConfig(lr=1e-3, lr_backbone=1e-4))
    sched = LrSchedule(opt, warmup_steps=0, lr_drop=0.1, shape=shape)  # lr_drop is the step shape's only
    lrs = [sched.update(10 + i, p) for i, p in enumerate((0.0, 0.25, 0.5, 0.75, 1.0))]
    assert lrs == pytest.approx([1e-3 * f for f in expected], abs=1e-12)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the backbone group follows
    assert sched.update(11, 0.5) == pytest.approx(1e-3 * expected[2])  # no state: progress alone decides
    warm = LrSchedule(build_optimizer(Toy(), TrainConfig(lr=1e-3)), warmup_steps=4, lr_drop=1.0, shape=shape)
    assert warm.update(1, 0.5) == pytest.approx(1e-3 * expected[2] * 2 / 4)  # warm-up scales the decay


def test_an_unknown_schedule_shape_is_refused():
    with pytest.raises(ConfigError, match="lr_schedule"):
        validate(apply_overrides(Config(), ["train.lr_schedule=exponential"]))


def test_ema_ramps_up_and_copies_integer_buffers():
    model = Toy()
    ema = build_ema(model, decay=0.999)
    start = ema.module.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
        model.count.fill_(7)
    ema.update_parameters(model)  # first update copies
    torch.testing.assert_close(ema.module.head.weight, model.head.weight)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    ema.update_parameters(model)  # n=1: decay min(0.999, 2/11)
    expected = start + 1.0 + (1 - 2 / 11) * 1.0
    torch.testing.assert_close(ema.module.head.weight, expected)
    assert int(ema.module.count) == 7
