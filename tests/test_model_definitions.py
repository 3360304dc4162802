"""The definitions behind DINO's components, tested directly: LFT, the denoising mask, noise,
negative targets, empty batches, the matcher, deformable sampling, and the parameter count."""

import math

import pytest
import torch

from dinokit.config import load_preset
from dinokit.loss import build_criterion
from dinokit.loss.criterion import closest_gt_targets
from dinokit.loss.matcher import HungarianMatcher
from dinokit.model import sampling
from dinokit.model.sampling import sample_levels_gather, sample_levels_grid
from dinokit.model.denoising import Denoising, DenoisingQueries, noise_boxes, noise_labels
from dinokit.model.dino import DenoisingOutputs, build_model
from dinokit.model.postprocess import postprocess
from dinokit.model.summary import parameter_counts
from tests.model_helpers import make_targets, micro_config


# ---------------------------------------------------------------- look-forward-twice

@pytest.mark.parametrize("lft", [True, False])
def test_lft_gradient_reaches_previous_layer_box_only_when_on(lft):
    torch.manual_seed(0)
    cfg = micro_config(lft=lft, denoising="none")
    model = build_model(cfg).train()
    criterion = build_criterion(cfg)
    targets = make_targets([3, 2])
    out = model(torch.rand(2, 3, 64, 64), None, targets)
    layers = out["aux_outputs"] + [{"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]}]
    for i in range(1, len(layers)):
        cls, l1, giou = criterion.set_loss(layers[i]["pred_logits"], layers[i]["pred_boxes"], targets, 5.0)
        previous_box = out["refined"][i - 1]  # layer i-1's refined box, before detaching
        (grad,) = torch.autograd.grad(l1 + giou, previous_box, retain_graph=True, allow_unused=True)
        if lft:
            assert grad is not None and grad.abs().sum() > 0
        else:
            assert grad is None or grad.abs().sum() == 0


# ---------------------------------------------------------------- denoising mask

def _run_with(model, dn: DenoisingQueries, images, targets):
    model.denoising.forward = lambda t, k: dn
    return model(images, None, targets)


def _clone(dn: DenoisingQueries, **changes) -> DenoisingQueries:
    fields = {k: getattr(dn, k) for k in dn.__dataclass_fields__}
    fields.update(changes)
    return DenoisingQueries(**fields)


def _cdn_setup():
    """A CDN model in training mode, a batch with 3 and 1 boxes (two groups), its denoising
    queries and the outputs they give."""
    torch.manual_seed(0)
    cfg = micro_config(denoising="cdn", dn_number=6)
    model = build_model(cfg).train()
    targets = make_targets([3, 1])
    images = torch.rand(2, 3, 64, 64)
    dn = Denoising.forward(model.denoising, targets, cfg.num_queries)
    return model, targets, images, dn, _run_with(model, dn, images, targets)


def test_denoising_never_leaks_into_matching_queries_or_other_groups():
    model, targets, images, dn, base = _cdn_setup()
    assert dn.groups == 2

    noisy_content = dn.content + torch.randn_like(dn.content)
    noisy_anchors = dn.anchors + torch.randn_like(dn.anchors)
    changed = _run_with(model, _clone(dn, content=noisy_content, anchors=noisy_anchors), images, targets)
    assert torch.equal(base["pred_logits"], changed["pred_logits"])
    assert torch.equal(base["pred_boxes"], changed["pred_boxes"])
    assert not torch.equal(base["dn"].logits, changed["dn"].logits)

    block = dn.size // dn.groups  # perturb group 0 only; group 1 must not move
    content = dn.content.clone()
    content[:, :block] += torch.randn_like(content[:, :block])
    g0 = _run_with(model, _clone(dn, content=content), images, targets)
    assert torch.equal(base["dn"].logits[:, :, :, block:], g0["dn"].logits[:, :, :, block:])
    assert not torch.equal(base["dn"].logits[:, :, :, :block], g0["dn"].logits[:, :, :, :block])
    assert torch.equal(base["pred_logits"], g0["pred_logits"])


def test_padded_denoising_slots_are_masked_keys():
    """Image 1 has 1 box, image 0 has 3: image 1's real slots must not depend on its padding."""
    model, targets, images, dn, base = _cdn_setup()
    content = dn.content.clone()
    content[dn.padding] = torch.randn_like(content[dn.padding])
    changed = _run_with(model, _clone(dn, content=content), images, targets)
    real = ~dn.padding
    assert torch.equal(base["dn"].logits[:, real], changed["dn"].logits[:, real])


def test_denoising_layout_group_count_and_zero_boxes():
    cfg = micro_config(denoising="cdn", dn_number=8, dn_draws=2)
    dn_module = Denoising(cfg)
    dn = dn_module(make_targets([4, 2]), 12)
    assert dn.groups == 2 and dn.max_gt == 4
    assert dn.size == 2 * 2 * 2 * 4  # draws x groups x halves x max_gt
    assert dn.attn_mask.shape == (dn.size + 12, dn.size + 12)
    assert dn.attn_mask[dn.size:, :dn.size].all() and not dn.attn_mask[:, dn.size:].any()
    assert int(dn.padding.sum()) == 2 * 2 * 2 * 2  # image 1 pads 2 slots in every half
    assert dn_module(make_targets([0, 0]), 12) is None
    assert Denoising(micro_config(denoising="dn", dn_number=8))(make_targets([4]), 12).size == 8


# ---------------------------------------------------------------- noise

def test_box_noise_positive_inside_lambda_negative_between_lambda_and_twice():
    torch.manual_seed(0)
    lam = 0.4
    boxes = torch.tensor([0.5, 0.5, 0.2, 0.3]).expand(20000, 4)  # small central box: no clamping
    negative = torch.arange(20000) % 2 == 1
    noised = noise_boxes(boxes, negative, lam)
    to_xyxy = lambda b: torch.cat((b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2), -1)
    half = torch.tensor([0.1, 0.15, 0.1, 0.15])
    moved = ((to_xyxy(noised) - to_xyxy(boxes)).abs() / half / lam)  # in units of lambda1
    pos, neg = moved[~negative], moved[negative]
    assert pos.max() < 1.0 + 1e-5 and pos.mean() == pytest.approx(0.5, abs=0.02)
    assert neg.min() >= 1.0 - 1e-5 and neg.max() < 2.0 + 1e-5
    assert neg.mean() == pytest.approx(1.5, abs=0.02)


def test_label_noise_flip_rate():
    torch.manual_seed(0)
    labels = torch.zeros(100000, dtype=torch.long)
    flipped = (noise_labels(labels, 0.5, 10) != labels).float().mean()
    # redrawn with probability 0.5 / 2, uniformly over 10 classes (1/10 redraws keep the label)
    assert float(flipped) == pytest.approx(0.25 * 0.9, abs=0.01)
    assert (noise_labels(labels, 0.0, 10) == labels).all()


# ---------------------------------------------------------------- negative targets

def _hand_dn(neg_target: str):
    """One image, two ground truths, one CDN group: slots [pos0, pos1, neg0, neg1]."""
    cfg = micro_config(num_classes=3, neg_target=neg_target, dn_number=2, dec_layers=1)
    gt_boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.2, 0.2]]])
    gt_labels = torch.tensor([[0, 2]])
    noised = torch.tensor([[[0.21, 0.2, 0.1, 0.1], [0.8, 0.79, 0.2, 0.2],
                            [0.75, 0.75, 0.2, 0.2],  # negative of gt 0, drifted next to gt 1
                            [0.8, 0.6, 0.2, 0.3]]])  # negative of gt 1, still closest to gt 1
    dn = DenoisingQueries(
        content=torch.zeros(1, 4, 32), anchors=torch.zeros(1, 4, 4), attn_mask=torch.zeros(4, 4, dtype=torch.bool),
        padding=torch.zeros(1, 4, dtype=torch.bool), labels=torch.tensor([[0, 2, 0, 2]]),
        boxes=torch.cat((gt_boxes, gt_boxes), 1), noised=noised,
        negative=torch.tensor([[False, False, True, True]]), gt_boxes=gt_boxes, gt_labels=gt_labels,
        gt_valid=torch.ones(1, 2, dtype=torch.bool), draws=1, groups=1, max_gt=2,
    )
    return cfg, dn


def test_closest_gt_targets_hand_built():
    _, dn = _hand_dn("closest-gt")
    labels, boxes = closest_gt_targets(dn, slice(0, 4))
    assert labels.tolist() == [[0, 2, 2, 2]]
    assert torch.equal(boxes[0, 2], dn.gt_boxes[0, 1]) and torch.equal(boxes[0, 0], dn.gt_boxes[0, 0])


@pytest.mark.parametrize("neg_target", ["background", "closest-gt"])
def test_negative_supervision(neg_target):
    cfg, dn = _hand_dn(neg_target)
    criterion = build_criterion(cfg)
    logits = torch.zeros(1, 1, 4, 3, requires_grad=True)
    boxes = torch.full((1, 1, 4, 4), 0.5, requires_grad=True)
    loss, _ = criterion.denoising_loss(DenoisingOutputs(logits, boxes, dn), num_boxes=2.0)
    g_logits, g_boxes = torch.autograd.grad(loss, (logits, boxes))
    neg = slice(2, 4)
    assert g_logits[0, 0, neg].abs().sum() > 0  # negatives always get a class loss
    if neg_target == "background":
        assert (g_logits[0, 0, neg] > 0).all()  # every class pushed down: "no object"
        assert g_boxes[0, 0, neg].abs().sum() == 0  # and no box loss
    else:
        assert g_logits[0, 0, 2, 2] < 0 and g_logits[0, 0, 2, 0] > 0  # neg0 learns gt 1's class (2)
        assert g_boxes[0, 0, neg].abs().sum() > 0
    assert g_boxes[0, 0, :2].abs().sum() > 0  # positives always reconstruct their box


# ---------------------------------------------------------------- empty and uneven batches

@pytest.mark.parametrize("counts", [[0, 0], [0, 30], [30, 0, 1]])
def test_empty_and_uneven_batches_give_finite_loss(counts):
    torch.manual_seed(0)
    cfg = micro_config(denoising="cdn", dn_number=60)
    model = build_model(cfg).train()
    targets = make_targets(counts)
    losses = build_criterion(cfg)(model(torch.rand(len(counts), 3, 64, 64), None, targets), targets)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_batch_without_boxes_trains_classification_only():
    """No ground truth: box losses are exactly zero, box heads get exactly zero gradient, and every
    other parameter learns (pushes scores to "no object"), except those that cannot at the very first
    step: level_embed and the extra level's projection (only reached through the sampling offsets and
    attention weights, which start at zero) and the denoising label embedding (no boxes to noise)."""
    torch.manual_seed(0)
    cfg = micro_config(denoising="cdn", dn_number=60)
    model = build_model(cfg).train()
    targets = make_targets([0, 0])
    losses = build_criterion(cfg)(model(torch.rand(2, 3, 64, 64), None, targets), targets)
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == 0.0
    assert losses["loss_class"].item() > 0 and losses["loss_enc"].item() > 0
    losses["loss"].backward()
    box_heads = ("decoder.box_head.", "queries.enc_box_head.")
    idle = box_heads + ("denoising.label_enc.", "level_embed", f"input_proj.{cfg.num_feature_levels - 1}.")
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, name
        if name.startswith(box_heads):
            assert p.grad.abs().sum().item() == 0.0, name
        elif not name.startswith(idle):
            assert p.grad.abs().sum().item() > 0, name


# ---------------------------------------------------------------- matcher

def test_matcher_finds_the_known_optimal_assignment():
    matcher = HungarianMatcher(cost_class=2, cost_bbox=5, cost_giou=2, alpha=0.25, gamma=2)
    gt = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.3, 0.3], [0.5, 0.2, 0.2, 0.1]])
    labels = torch.tensor([1, 0, 2])
    # queries: 0 ~ gt2, 1 far away, 2 ~ gt0, 3 ~ gt1 ; class logits agree
    boxes = torch.tensor([[0.5, 0.21, 0.2, 0.1], [0.9, 0.1, 0.05, 0.05], [0.21, 0.2, 0.1, 0.1], [0.7, 0.69, 0.3, 0.3]])
    logits = torch.full((4, 3), -4.0)
    logits[0, 2] = logits[2, 1] = logits[3, 0] = 4.0
    (src, tgt), = matcher(logits[None], boxes[None], [{"boxes": gt, "labels": labels}])
    assert dict(zip(tgt.tolist(), src.tolist())) == {0: 2, 1: 3, 2: 0}


# ---------------------------------------------------------------- deformable sampling

@pytest.mark.parametrize("sample", [sample_levels_gather, sample_levels_grid], ids=["gather", "grid"])
def test_deformable_sampling_on_pixel_centres_equals_gather(sample):
    torch.manual_seed(0)
    shapes = [(4, 6), (2, 3)]
    B, M, Dh, Q, P = 2, 2, 3, 5, 3
    S = sum(h * w for h, w in shapes)
    value = torch.randn(B, S, M, Dh)
    L = len(shapes)
    iy = torch.stack([torch.randint(0, h, (B, Q, M, P)) for h, _ in shapes], 3)  # (B, Q, M, L, P)
    ix = torch.stack([torch.randint(0, w, (B, Q, M, P)) for _, w in shapes], 3)
    hs = torch.tensor([h for h, _ in shapes]).view(1, 1, 1, L, 1)
    ws = torch.tensor([w for _, w in shapes]).view(1, 1, 1, L, 1)
    locations = torch.stack(((ix + 0.5) / ws, (iy + 0.5) / hs), -1)
    weights = torch.rand(B, Q, M, L, P)
    out = sample(value, shapes, locations, weights)
    starts = [0, shapes[0][0] * shapes[0][1]]
    expected = torch.zeros(B, Q, M, Dh)
    for b in range(B):
        for q in range(Q):
            for m in range(M):
                for lvl in range(L):
                    for p in range(P):
                        flat = starts[lvl] + iy[b, q, m, lvl, p] * shapes[lvl][1] + ix[b, q, m, lvl, p]
                        expected[b, q, m] += weights[b, q, m, lvl, p] * value[b, flat, m]
    assert torch.allclose(out, expected.view(B, Q, M * Dh), atol=1e-5)


def _random_sampling_inputs(dtype: torch.dtype) -> tuple:
    """Random value, locations (some outside the map, some on borders) and weights at 3 levels."""
    g = torch.Generator().manual_seed(1)
    shapes = [(9, 13), (5, 7), (3, 4)]
    B, Q, M, Dh, P = 2, 23, 3, 4, 4
    S = sum(h * w for h, w in shapes)
    value = torch.randn(B, S, M, Dh, generator=g, dtype=dtype)
    locations = torch.rand(B, Q, M, len(shapes), P, 2, generator=g, dtype=dtype) * 1.3 - 0.15
    locations[0, 0, 0, 0, 0] = torch.tensor([0.0, 1.0], dtype=dtype)  # exactly on the border
    weights = torch.rand(B, Q, M, len(shapes), P, generator=g, dtype=dtype)
    return value, shapes, locations, weights


@pytest.mark.parametrize("kernel", [True, False], ids=["aten-kernel", "fallback"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gather_sampling_equals_grid_sample_with_gradients(dtype, kernel, monkeypatch):
    if not kernel:  # a torch without embedding_bag's private per-sample-weights backward
        monkeypatch.setattr(sampling, "_WEIGHTS_KERNEL", None)
    else:
        assert sampling._WEIGHTS_KERNEL is not None  # the tested torch has it
    monkeypatch.setattr(sampling, "_SCATTER_ROWS", 7)  # several chunks in the value-gradient scatter
    monkeypatch.setattr(sampling, "_QUERY_BLOCK", 30)  # and several query blocks (5 queries each)
    results = []
    for sample in (sample_levels_grid, sample_levels_gather):
        value, shapes, locations, weights = (
            t.requires_grad_() if isinstance(t, torch.Tensor) else t for t in _random_sampling_inputs(dtype)
        )
        out = sample(value, shapes, locations, weights)
        grad_out = torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)
        grads = torch.autograd.grad(out, (value, locations, weights), grad_out)
        results.append((out, grads))
    (out_ref, grads_ref), (out_fast, grads_fast) = results
    assert out_fast.shape == out_ref.shape
    assert (out_fast - out_ref).abs().max() < 1e-5
    for name, a, b in zip(("value", "locations", "weights"), grads_ref, grads_fast):
        scale = max(1.0, a.abs().max().item())  # location gradients are scaled by the map size
        assert (a - b).abs().max() / scale < 1e-5, name


def _gather_grads(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    value, shapes, locations, weights = (
        t.requires_grad_() if isinstance(t, torch.Tensor) else t for t in _random_sampling_inputs(dtype)
    )
    out = sample_levels_gather(value, shapes, locations, weights)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)
    return (out.detach(), *torch.autograd.grad(out, (value, locations, weights), grad_out))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weights_kernel_fallback_gives_the_fast_paths_gradients(dtype, monkeypatch):
    """A torch without aten._embedding_bag_per_sample_weights_backward: the gather fallback gives
    the kernel's outputs and gradients (same sums, maybe another order: float tolerance)."""
    kernel, calls = sampling._WEIGHTS_KERNEL, []
    assert kernel is not None  # the tested torch has it

    def counted(*args):
        calls.append(1)
        return kernel(*args)

    monkeypatch.setattr(sampling, "_WEIGHTS_KERNEL", counted)
    fast = _gather_grads(dtype)
    assert calls  # the fast path really used the kernel
    monkeypatch.setattr(sampling, "_WEIGHTS_KERNEL", None)  # as a torch build without it
    slow = _gather_grads(dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for name, a, b in zip(("out", "value", "locations", "weights"), fast, slow):
        assert torch.equal(a, b) if name in ("out", "value") else (a - b).abs().max() <= tol * max(1.0, a.abs().max()), name
    assert not torch.equal(fast[2], torch.zeros_like(fast[2]))  # the gradients compared are not trivial


# ---------------------------------------------------------------- sizes and postprocess

def test_r50_4scale_matches_official_parameter_count():
    counts = parameter_counts(build_model(load_preset("r50-4scale").model, load_weights=False))
    assert counts["total"] == 46_893_182
    assert counts["trainable"] == 46_670_782


def test_postprocess_topk_in_original_pixels():
    logits = torch.full((1, 3, 2), -10.0)
    logits[0, 1, 0] = 5.0
    logits[0, 2, 1] = 3.0
    boxes = torch.tensor([[[0.5, 0.5, 1.0, 1.0], [0.25, 0.5, 0.5, 1.0], [0.5, 0.25, 0.2, 0.1]]])
    (det,) = postprocess({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[100, 200]]), num_select=2)
    assert det["labels"].tolist() == [0, 1]
    assert torch.allclose(det["boxes"][0], torch.tensor([0.0, 0.0, 100.0, 100.0]))
    assert torch.allclose(det["boxes"][1], torch.tensor([80.0, 20.0, 120.0, 30.0]))
    assert det["scores"][0] == pytest.approx(1 / (1 + math.exp(-5.0)))
