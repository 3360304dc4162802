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


AID_COMBOS = [  # the training-only aids together with the paper's switches
    ("mixed", "cdn", 2, 6, "vfl", 2), ("pure", "dn", 1, 8, "ia-bce", 1), ("static", "none", 3, 0, "mal", 1),
]


@pytest.mark.parametrize("queries,denoising,groups,one_to_many,cls,draws", AID_COMBOS)
def test_aids_combine_with_the_switches(queries, denoising, groups, one_to_many, cls, draws):
    from dinokit.config import LossConfig

    torch.manual_seed(0)
    cfg = micro_config(queries=queries, denoising=denoising, query_groups=groups,
                       one_to_many_queries=one_to_many, one_to_many_k=2, dn_draws=draws)
    model = build_model(cfg).train()
    criterion = build_criterion(cfg, LossConfig(cls=cls))
    targets = make_targets([3, 0])
    losses = criterion(model(torch.rand(2, 3, 64, 64), None, targets), targets)
    assert torch.isfinite(losses["loss"])
    assert ("loss_groups" in losses) == (groups > 1) and ("loss_one_to_many" in losses) == (one_to_many > 0)
    losses["loss"].backward()
    if queries != "pure":  # every group's learned content (and the one-to-many rows) is trained
        grad = model.queries.tgt_embed.weight.grad.abs().sum(-1)
        assert (grad > 0).all()
