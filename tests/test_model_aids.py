"""Training-only aids: query groups, one-to-many queries, IoU-aware class losses."""

import math

import pytest
import torch

from dinokit.config import LossConfig
from dinokit.loss import build_criterion
from dinokit.loss.classification import classification_loss
from dinokit.model.dino import build_model
from dinokit.model.groups import QueryLayout, attention_mask, repeat_targets
from tests.model_helpers import make_targets, micro_config


def _train_mode_fixed_norms(model):
    """Training mode (queries, denoising, aids on) with BatchNorm on running statistics, so that
    a training forward and an inference forward see the same backbone features."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return model


def test_group_mask_isolates_groups():
    layout = QueryLayout(one_to_one=3, groups=2, one_to_many=4)
    blocked = layout.blocked(torch.device("cpu"))
    block = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    expected = torch.tensor([[a != b for b in block] for a in block])
    assert torch.equal(blocked, expected)
    # with 2 denoising slots in front: they see each other and group 0, nothing after it
    dn = torch.zeros(12, 12, dtype=torch.bool)
    dn[2:, :2] = True
    mask = attention_mask(layout, dn, 2, torch.device("cpu"))
    assert not mask[:2, :5].any() and mask[:2, 5:].all()
    assert mask[2:, :2].all() and torch.equal(mask[2:, 2:], expected)
    assert attention_mask(QueryLayout(3), None, 0, torch.device("cpu")) is None


def test_groups_do_not_see_each_other_in_the_decoder():
    """Changing group 1's and the one-to-many queries' learned content changes nothing for
    group 0 or the denoising queries, and changes group 1."""
    torch.manual_seed(0)
    cfg = micro_config(query_groups=2, one_to_many_queries=6)
    model = _train_mode_fixed_norms(build_model(cfg))
    images, targets = torch.rand(2, 3, 64, 64), make_targets([3, 1])
    torch.manual_seed(1)
    a = model(images, None, targets)
    with torch.no_grad():
        model.queries.tgt_embed.weight[cfg.num_queries:] += 1.0
    torch.manual_seed(1)  # the same denoising noise
    b = model(images, None, targets)
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])
    assert torch.equal(a["dn"].logits, b["dn"].logits)
    assert not torch.allclose(a["group_outputs"][0]["pred_logits"], b["group_outputs"][0]["pred_logits"])
    assert a["one_to_many"]["pred_logits"].shape == (2, 6, cfg.num_classes)


def test_one_to_many_targets_repeat_each_box_k_times():
    targets = make_targets([3, 0])
    rep = repeat_targets(targets, 4)
    assert rep[0]["boxes"].shape == (12, 4) and rep[1]["boxes"].shape == (0, 4)
    for j in range(3):
        assert (rep[0]["boxes"] == targets[0]["boxes"][j]).all(-1).sum() == 4
        assert (rep[0]["labels"][j::3] == targets[0]["labels"][j]).all()
    # the criterion matches each ground-truth box to k distinct one-to-many queries
    torch.manual_seed(0)
    cfg = micro_config(one_to_many_queries=10, one_to_many_k=3)
    model = build_model(cfg).train()
    criterion = build_criterion(cfg)
    targets = make_targets([3, 2])
    out = model(torch.rand(2, 3, 64, 64), None, targets)
    o2m = out["one_to_many"]
    indices = criterion.matcher(o2m["pred_logits"], o2m["pred_boxes"], repeat_targets(targets, 3))
    for (src, tgt), t in zip(indices, targets):
        assert len(set(src.tolist())) == 3 * len(t["labels"])
        assert torch.bincount(tgt % len(t["labels"])).tolist() == [3] * len(t["labels"])
    losses = criterion(out, targets)
    assert torch.isfinite(losses["loss_one_to_many"]) and losses["loss_one_to_many"] > 0


@pytest.mark.parametrize("queries", ["mixed", "pure", "static"])
def test_inference_runs_only_the_one_to_one_queries(queries):
    torch.manual_seed(0)
    cfg = micro_config(queries=queries, query_groups=1 if queries == "pure" else 3, one_to_many_queries=5)
    model = _train_mode_fixed_norms(build_model(cfg))
    images, targets = torch.rand(2, 3, 64, 64), make_targets([2, 1])
    with torch.no_grad():
        trained = model(images, None, targets)
        inferred = model.eval()(images)
    K = cfg.num_queries
    assert trained["refined"][0].shape[1] > K + 5  # denoising + groups + one-to-many in training
    assert inferred["refined"][0].shape[1] == K and inferred["pred_logits"].shape[1] == K
    assert inferred["group_outputs"] == [] and inferred["one_to_many"] is None and inferred["dn"] is None
    torch.testing.assert_close(inferred["pred_logits"], trained["pred_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inferred["pred_boxes"], trained["pred_boxes"], rtol=1e-5, atol=1e-5)
    for a, b in zip(inferred["aux_outputs"], trained["aux_outputs"]):
        torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- class losses, by hand

LOGITS = torch.tensor([[2.0, 1.0]])  # one query, two classes: the matched class 0 and class 1
ONEHOT = torch.tensor([[1.0, 0.0]])
IOU = torch.tensor([0.5])


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _bce(x: float, t: float) -> float:
    return -(t * math.log(_sig(x)) + (1 - t) * math.log(1 - _sig(x)))


def _hand(kind: str) -> list[float]:
    p0, p1 = _sig(2.0), _sig(1.0)
    if kind == "focal":  # alpha 0.25, gamma 2
        return [0.25 * (1 - p0) ** 2 * _bce(2.0, 1.0), 0.75 * p1**2 * _bce(1.0, 0.0)]
    if kind == "vfl":  # target IoU, weight IoU; negative 0.75 p^2
        return [0.5 * _bce(2.0, 0.5), 0.75 * p1**2 * _bce(1.0, 0.0)]
    if kind == "ia-bce":  # target p^0.25 IoU^0.75; negative p^2
        return [_bce(2.0, p0**0.25 * 0.5**0.75), p1**2 * _bce(1.0, 0.0)]
    return [_bce(2.0, 0.5**1.5), p1**1.5 * _bce(1.0, 0.0)]  # mal: target IoU^1.5; negative p^1.5


@pytest.mark.parametrize("kind", ["focal", "vfl", "ia-bce", "mal"])
def test_class_loss_matches_hand_computation(kind):
    got = classification_loss(kind, LOGITS, ONEHOT, IOU, LossConfig(), alpha=0.25, gamma=2.0)
    assert got.shape == (1, 2)
    torch.testing.assert_close(got[0], torch.tensor(_hand(kind)), rtol=1e-5, atol=1e-6)



@pytest.mark.parametrize("item,words", [
    ("model.query_groups=0", "query_groups"), ("loss.cls=dice", "loss.cls"),
    ("model.one_to_many_k=0", "one_to_many_k"),
])
def test_bad_aid_settings_are_refused_with_one_line(item, words):
    from dinokit.config import ConfigError, apply_overrides, load_preset

    with pytest.raises(ConfigError, match=words):
        apply_overrides(load_preset("tiny"), [item])
    cfg = apply_overrides(load_preset("tiny"), ["model.queries=pure"])
    with pytest.raises(ConfigError, match="learned content"):
        apply_overrides(cfg, ["model.query_groups=2"])


@pytest.mark.parametrize("groups,one_to_many", [(1, 0), (2, 5)])
def test_split_self_attention_equals_the_masked_reference(groups, one_to_many):
    """The matching queries' attention without the denoising keys (split) gives the same
    outputs and gradients as one masked attention over all queries."""
    torch.manual_seed(0)
    cfg = micro_config(query_groups=groups, one_to_many_queries=one_to_many)
    model = _train_mode_fixed_norms(build_model(cfg))
    criterion = build_criterion(cfg)
    images, targets = torch.rand(2, 3, 64, 64), make_targets([3, 1])
    results = []
    for split in (False, True):
        model.decoder.split_self_attention = split
        model.zero_grad()
        torch.manual_seed(1)
        out = model(images, None, targets)
        criterion(out, targets)["loss"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((torch.cat([r.flatten() for r in out["refined"]]), out["dn"].logits, grads))
    (ref, ref_dn, ref_grads), (got, got_dn, got_grads) = results
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_dn, ref_dn, rtol=1e-5, atol=1e-6)
    assert ref_grads.keys() == got_grads.keys()
    for name in ref_grads:  # atol: a few gradients are ~1e-6 sums of cancelling terms (float order)
        torch.testing.assert_close(got_grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)
