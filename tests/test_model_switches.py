"""Every switch combination builds, runs forward and backward, and trains every part."""

import itertools

import pytest
import torch

from dinokit.loss import build_criterion
from dinokit.model.dino import build_model
from tests.model_helpers import make_targets, micro_config

COMBOS = list(itertools.product(
    ["mixed", "pure", "static"], ["cdn", "dn", "none"], [True, False], [1, 2],
    ["deformable", "dense"], ["background", "closest-gt"],
))


def _grad_norm(model, prefix: str) -> float:
    grads = [p.grad.abs().sum() for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
    return float(sum(grads)) if grads else 0.0


@pytest.mark.parametrize("queries,denoising,lft,draws,attention,neg_target", COMBOS)
def test_every_combination_trains(queries, denoising, lft, draws, attention, neg_target):
    torch.manual_seed(0)
    cfg = micro_config(queries=queries, denoising=denoising, lft=lft, dn_draws=draws,
                       attention=attention, neg_target=neg_target)
    model = build_model(cfg).train()
    criterion = build_criterion(cfg)
    targets = make_targets([3, 1])
    losses = criterion(model(torch.rand(2, 3, 64, 64), None, targets), targets)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    for part in ("encoder.", "decoder.layers.", "decoder.class_head.", "decoder.box_head.", "input_proj.", "backbone."):
        assert _grad_norm(model, part) > 0, f"no gradient reaches {part}"
    if denoising != "none":
        assert _grad_norm(model, "denoising.label_enc.") > 0
        assert "loss_dn" in losses
    if queries != "static":
        assert _grad_norm(model, "queries.enc_class_head.") > 0
