"""The 2025-2026 successors' aids: mosaic (DEIM's dense one-to-one), Copy-Blend (DEIMv2),
Stable-DINO's position-supervised loss and position-modulated cost, DEIMv2's late IoU cost, and
the final phase without strong augmentation with its EMA restart (DEIM / D-FINE)."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch
from torch.utils.data import Dataset

from dinokit.config import ConfigError, DataConfig, LossConfig, apply_overrides, load_preset
from dinokit.data import copyblend
from dinokit.data.copyblend import copy_blend
from dinokit.data.mixing import MixedSamples
from dinokit.data.mosaic import mosaic
from dinokit.interop.load import load_checkpoint
from dinokit.loss.classification import classification_loss
from dinokit.loss.criterion import build_criterion
from dinokit.loss.matcher import HungarianMatcher, focal_cost
from dinokit.model.denoising import pad_targets
from dinokit.model.summary import training_aids
from dinokit.training.phases import LatePhases
from dinokit.training.samples import SeededSamples
from dinokit.training.trainer import train
from tests.model_helpers import micro_config
from tests.train_helpers import MICRO_MODEL, isolated_cache


def _sigmoid_inverse(p: float) -> float:
    return math.log(p / (1 - p))


# ---------------------------------------------------------------- mosaic and Copy-Blend on a batch


def test_mosaic_tiles_four_images_at_the_centre_with_their_boxes():
    """Four flat-coloured tiles of different shapes, one box each: each lands in its quarter,
    touching the centre, scaled to fit it; its box follows."""
    tiles = []
    for k, (h, w) in enumerate([(40, 40), (20, 40), (40, 20), (40, 40)]):
        image = torch.full((3, h, w), float(k + 1) / 4)
        tiles.append((image, torch.tensor([[0.5, 0.5, 0.5, 0.5]]), torch.tensor([k])))
    canvas, boxes, labels = mosaic(tiles, 64)
    assert canvas.shape == (3, 64, 64)
    assert labels.tolist() == [0, 1, 2, 3]
    # tile 0: 40x40 -> 32x32 in [0, 32)^2; tile 1: 20x40 -> 16x32 at rows [16, 32), cols [32, 64)
    # tile 2: 40x20 -> 32x16 at rows [32, 64), cols [16, 32); tile 3: 32x32 in [32, 64)^2
    def flat(region, value):
        return torch.allclose(region, torch.full_like(region, value), atol=1e-6)

    assert flat(canvas[:, :32, :32], 0.25) and flat(canvas[:, 16:32, 32:], 0.5)
    assert flat(canvas[:, :16, 32:], 0.0) and flat(canvas[:, 32:, :16], 0.0)  # black where no tile
    assert flat(canvas[:, 32:, 16:32], 0.75) and flat(canvas[:, 32:, 32:], 1.0)
    expected = torch.tensor([[16, 16, 16, 16], [48, 24, 16, 8], [24, 48, 8, 16], [48, 48, 16, 16]]) / 64
    torch.testing.assert_close(boxes, expected)


def test_mosaic_drops_boxes_that_shrink_below_a_pixel():
    tiles = [(torch.zeros(3, 64, 64), torch.tensor([[0.5, 0.5, 0.02, 0.5], [0.5, 0.5, 0.5, 0.5]]), torch.tensor([0, 1]))]
    tiles += [(torch.zeros(3, 64, 64), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))] * 3
    _, boxes, labels = mosaic(tiles, 64)  # 64 -> 32: the 1.3 px wide box becomes 0.6 px
    assert labels.tolist() == [1] and boxes.shape == (1, 4)


def test_copy_blend_pastes_a_donor_object_blended_with_its_box():
    """A black image, a white donor with one 10x8 px object: the pasted box has the object's size,
    the pixels under it are (1 - beta) white with beta in [0.45, 0.55], and nothing changes
    outside the box widened by at most 25% on each side."""
    image, donor = torch.zeros(3, 50, 60), torch.ones(3, 40, 40)
    obj = torch.tensor([[20 / 40, 20 / 40, 10 / 40, 8 / 40]])  # cxcywh: x 15-25, y 16-24 px
    sample = (image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    out, boxes, labels = copy_blend(sample, [(donor, obj, torch.tensor([3]))], 3, torch.Generator().manual_seed(0))
    assert labels.tolist() == [3] and boxes.shape == (1, 4)
    cx, cy, w, h = (boxes[0] * torch.tensor([60, 50, 60, 50])).tolist()
    assert (round(w), round(h)) == (10, 8)
    x1, y1 = round(cx - w / 2), round(cy - h / 2)
    inside = out[:, y1:y1 + 8, x1:x1 + 10]
    assert torch.allclose(inside, inside[0, 0, 0]) and 0.45 <= float(inside[0, 0, 0]) <= 0.55
    changed = (out != 0).any(0).nonzero()
    assert changed[:, 0].min() >= y1 - 2 and changed[:, 0].max() < y1 + 8 + 2  # widened by <= 25% of 8 px
    assert changed[:, 1].min() >= x1 - 2 and changed[:, 1].max() < x1 + 10 + 2
    assert torch.equal(image, torch.zeros(3, 50, 60))  # the input is not modified


def test_copy_blend_leaves_out_objects_below_deimv2s_area_threshold():
    tiny = math.sqrt(copyblend.MIN_AREA) / 2  # a quarter of the threshold area
    sample = (torch.zeros(3, 32, 32), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    donor = (torch.ones(3, 32, 32), torch.tensor([[0.5, 0.5, tiny, tiny]]), torch.tensor([1]))
    out, boxes, _ = copy_blend(sample, [donor], 3, torch.Generator().manual_seed(0))
    assert boxes.shape == (0, 4) and torch.equal(out, sample[0])


class _RandomImages(Dataset):
    """Each item draws its pixels and one box from torch's global generator (like augmentation)."""

    def __init__(self, n: int = 6) -> None:
        self.n, self.transforms = n, None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        image = torch.rand(3, 32, 32)
        box = torch.tensor([[0.5, 0.5, 0.4, 0.4]]) + 0.05 * torch.rand(1, 4)
        return image, {"boxes": box, "labels": torch.tensor([i % 3]), "image_id": i, "size": torch.tensor([32, 32])}


def test_mixed_samples_derive_from_seed_epoch_and_index_and_keep_the_image_s_own_draws():
    off = SeededSamples(MixedSamples(_RandomImages(), DataConfig()), seed=3)
    on = SeededSamples(MixedSamples(_RandomImages(), DataConfig(copy_blend=1.0)), seed=3)
    before = torch.get_rng_state()
    plain, blended = off[2], on[2]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator (model noise) is untouched
    assert len(blended[1]["boxes"]) > 1 and torch.equal(blended[1]["boxes"][:1], plain[1]["boxes"])
    # the image's own draws are the same with the aid: pixels away from the pasted patches are equal
    same = (blended[0] == plain[0]).all(0)
    assert same.float().mean() > 0.3 and not same.all()
    again = on[2]
    assert torch.equal(again[0], blended[0]) and torch.equal(again[1]["boxes"], blended[1]["boxes"])
    on.set_epoch(1)
    assert not torch.equal(on[2][0], blended[0])
    assert torch.equal(off[2][0], plain[0])  # with the aids off an item is the dataset's own


def test_final_phase_transforms_keep_the_flip_and_one_size():
    from PIL import Image
    from torchvision import tv_tensors

    from dinokit.data.transforms import train_transforms

    cfg = DataConfig(image_size=128, min_size=64)
    image = Image.new("RGB", (200, 100))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[10.0, 10.0, 60.0, 50.0]]), format="XYXY", canvas_size=(100, 200))
    sizes, flipped = set(), set()
    for seed in range(12):
        torch.manual_seed(seed)
        out, target = train_transforms(cfg, strong=False)(image, {"boxes": boxes, "labels": torch.tensor([0])})
        sizes.add(tuple(out.shape[-2:]))
        flipped.add(float(target["boxes"][0, 0]) > 64)
    assert sizes == {(64, 128)} and flipped == {True, False}
    strong = set()
    for seed in range(12):
        torch.manual_seed(seed)
        strong.add(tuple(train_transforms(cfg)(image, {"boxes": boxes, "labels": torch.tensor([0])})[0].shape[-2:]))
    assert len(strong) > 1  # multi-scale when strong


def test_mixed_samples_mosaic_and_strong_off():
    mixed = MixedSamples(_RandomImages(), DataConfig(mosaic=1.0, image_size=64))
    samples = SeededSamples(mixed, seed=0)
    image, target = samples[1]
    assert image.shape == (3, 32, 32) and len(target["boxes"]) == 4 and target["size"].tolist() == [32, 32]
    mixed.strong(False)  # the final phase: one image, its own box
    image, target = samples[1]
    assert len(target["boxes"]) == 1 and mixed.base.transforms is not None


# ---------------------------------------------------------------- Stable-DINO's loss and cost, DEIMv2's IoU cost


def _bce(x: float, t: float) -> float:
    s = 1 / (1 + math.exp(-x))
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


def test_position_supervised_loss_matches_hand_computation():
    """Two matched queries with IoU 0.5 and 0.25 in one image: targets IoU^2 = 0.25 and 0.0625,
    scaled so that the image's best is 1 (1 and 0.25); weights 0.25 |t - s|^2 on positives,
    0.75 s^2 on negatives."""
    logits = torch.tensor([[[1.0, -1.0], [0.0, 2.0], [-2.0, 0.5]]])  # (1 image, 3 queries, 2 classes)
    onehot = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    iou = torch.tensor([[0.5, 0.25, 0.0]])
    got = classification_loss("stable", logits, onehot, iou, LossConfig(), alpha=0.25, gamma=2.0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = torch.zeros(1, 3, 2)
    for q in range(3):
        for c in range(2):
            x = float(logits[0, q, c])
            if onehot[0, q, c]:
                t = {0: 1.0, 1: 0.25}[q]
                want[0, q, c] = 0.25 * abs(t - sig(x)) ** 2 * _bce(x, t)
            else:
                want[0, q, c] = 0.75 * sig(x) ** 2 * _bce(x, 0.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_stable_loss_keeps_focal_on_the_denoising_queries():
    assert build_criterion(micro_config(), LossConfig(cls="stable")).dn_cls == "focal"
    assert build_criterion(micro_config(), LossConfig(cls="mal")).dn_cls == "mal"


def _hand_case():
    """One ground-truth box of class 0 (x and y 0.4-0.6); query 0 on it (probability 0.3), query 1
    shifted right to x 0.55-0.75 (probability 0.35; intersection 0.01, union = hull = 0.07: IoU
    and GIoU 1/7)."""
    gt = pad_targets([{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "labels": torch.tensor([0])}], torch.device("cpu"))
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.65, 0.5, 0.2, 0.2]]])
    logits = torch.full((1, 2, 2), -5.0)
    logits[0, 0, 0], logits[0, 1, 0] = _sigmoid_inverse(0.3), _sigmoid_inverse(0.35)
    return logits, boxes, gt


def test_position_modulated_cost_on_a_hand_made_case():
    """Class cost only: the plain focal cost matches the better-scoring, poorly placed query 1;
    modulated, its probability becomes 0.35 x u^0.5 = 0.26 with u = (GIoU + 1) / 2 = 4/7 (the best
    pair, query 0, has u = 1: no scaling), and the well-placed query 0 wins."""
    logits, boxes, gt = _hand_case()
    plain = HungarianMatcher(1.0, 0.0, 0.0, 0.25, 2.0)
    modulated = HungarianMatcher(1.0, 0.0, 0.0, 0.25, 2.0, position_cost=0.5)
    want_plain = focal_cost(torch.tensor([0.3, 0.35]), 0.25, 2.0)
    want_mod = focal_cost(torch.tensor([0.3, 0.35 * (4 / 7) ** 0.5]), 0.25, 2.0)
    torch.testing.assert_close(plain.costs(logits, boxes, gt)[0, :, 0], want_plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(modulated.costs(logits, boxes, gt)[0, :, 0], want_mod, rtol=1e-5, atol=1e-6)
    assert plain.assign(plain.costs(logits, boxes, gt), gt.valid)[0][0, 0] == 1
    assert modulated.assign(modulated.costs(logits, boxes, gt), gt.valid)[0][0, 0] == 0


def test_late_iou_cost_on_a_hand_made_case_and_its_phase():
    """After the switch the cost is -(p x IoU^4): 0.3 x 1 against 0.35 x (1/7)^4, query 0 wins;
    the phase starts once its fraction of the budget is spent, once, and survives a resume."""
    logits, boxes, gt = _hand_case()
    matcher = HungarianMatcher(1.0, 0.0, 0.0, 0.25, 2.0, iou_cost_power=4.0)
    assert matcher.assign(matcher.costs(logits, boxes, gt), gt.valid)[0][0, 0] == 1  # before: class cost
    phases = LatePhases({"iou_cost": 0.78, "no_aug": 0.0})
    assert phases.due(0.5) == [] and phases.due(0.78) == ["iou_cost"] and phases.due(0.9) == []
    matcher.iou_cost = phases.on("iou_cost")
    torch.testing.assert_close(matcher.costs(logits, boxes, gt)[0, :, 0], torch.tensor([-0.3, -0.35 / 7**4]))
    assert matcher.assign(matcher.costs(logits, boxes, gt), gt.valid)[0][0, 0] == 0
    resumed = LatePhases({"iou_cost": 0.78})
    resumed.load_state_dict(phases.state_dict())
    assert resumed.on("iou_cost") and resumed.due(0.95) == []


@pytest.mark.parametrize("late", [False, True])
def test_the_aids_add_no_host_read_to_the_loss(monkeypatch, late):
    """Stable-DINO's loss and cost, and the late IoU cost, stay on the device (CUDA: no sync):
    the criterion still reads only the matcher's costs, once per matching."""
    from dinokit.model.dino import build_model
    from tests.model_helpers import make_targets
    from tests.test_step_syncs import HostReads

    cfg = micro_config(position_cost=0.5)
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False).train()
    targets = make_targets([3, 0, 5, 2], seed=2)
    outputs = model(torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3)), None, targets)
    criterion = build_criterion(cfg, LossConfig(cls="stable"))
    criterion.matcher.iou_cost = late
    reads = HostReads(monkeypatch)
    with reads:
        losses = criterion(outputs, targets)
    assert reads.calls["cpu"] == cfg.dec_layers + 1 and reads.scalars == [] and reads.calls["tolist"] == 0
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])


# ---------------------------------------------------------------- configuration


def test_aids_are_off_in_the_paper_presets_and_named_in_training_aids():
    for name in ("r50-4scale", "r50-5scale"):
        assert training_aids(load_preset(name)) == "none"
    tiny = load_preset("tiny")
    assert (tiny.data.mosaic, tiny.data.copy_blend, tiny.train.no_aug_from, tiny.model.position_cost,
            tiny.model.iou_cost_from) == (0.0, 0.0, 0.0, 0.0, 0.0)
    cfg = apply_overrides(load_preset("tiny"), ["data.mosaic=0.5", "data.copy_blend=0.5", "loss.cls=stable",
                                                "model.position_cost=0.5", "model.iou_cost_from=0.78",
                                                "train.no_aug_from=0.86"])
    text = training_aids(cfg)
    for words in ("mosaic p=0.5", "copy-blend p=0.5 x3", "stable class loss", "position-modulated cost 0.5",
                  "IoU cost from 0.78", "EMA restart from 0.86"):
        assert words in text


@pytest.mark.parametrize("item", ["data.mosaic=1.5", "data.copy_blend=-0.1", "data.copy_blend_objects=0",
                                  "train.no_aug_from=1", "model.iou_cost_from=1.0", "model.position_cost=-1",
                                  "loss.cls=stable-dino"])
def test_bad_aid_values_are_refused(item):
    with pytest.raises(ConfigError, match=item.split("=")[0].split(".")[1]):
        apply_overrides(load_preset("tiny"), [item])


@pytest.mark.parametrize("flag,value,field", [("--mosaic", "1.5", "data.mosaic"), ("--copy-blend", "2", "data.copy_blend"),
                                              ("--no-aug-from", "1", "train.no_aug_from")])
def test_train_flags_set_their_fields(flag, value, field, capsys, tmp_path):
    """Each flag reaches its config field: an out-of-range value is refused in one line naming it,
    before anything trains."""
    from tests.cli_helpers import run_cli

    assert run_cli(["train", flag, value, "--steps", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and field in err and "Traceback" not in err


def test_shipped_successors_2026_is_the_recipe_against_one_aid_per_arm():
    from dinokit.ablate.arms import arm_config, load_study_file
    from dinokit.config import diff_configs

    arms = load_study_file("successors_2026")
    assert arms.baseline == "recipe" and arms.names[0] == "recipe"
    base = load_preset("tiny")  # the study runs on the tiny recipe as it is: no base overrides
    changed = {a.name: [d.split(" ")[0] for d in diff_configs(base.to_dict(), arm_config(base, a).to_dict())]
               for a in arms.arms}
    assert changed == {
        "recipe": [], "copy-blend": ["data.copy_blend"], "dense-o2o": ["data.mosaic"],
        "stable-dino": ["loss.cls", "model.position_cost"], "iou-cost-late": ["model.iou_cost_from"],
        "no-aug-final": ["train.no_aug_from"],
    }


def test_a_study_arm_may_change_augmentation_but_not_the_images(tmp_path):
    from dinokit.ablate.arms import load_study_file

    path = tmp_path / "study.yaml"
    path.write_text("arms: [{name: a}, {name: b, data: {mosaic: 0.5}}]\n")
    assert load_study_file(path).arms[1].overrides == {"data.mosaic": 0.5}
    path.write_text("arms: [{name: a}, {name: b, data: {shapes_train: 50}}]\n")
    with pytest.raises(ConfigError, match="data.shapes_train is the study's data"):
        load_study_file(path)


# ---------------------------------------------------------------- training: the phases and exact resume

FAST = [
    "data.shapes_train=16", "data.shapes_val=2", "data.shapes_size=64", "data.image_size=64", "data.min_size=32",
    *MICRO_MODEL, "train.batch_size=2", "train.time_budget=0", "train.threads=2", "train.lr=1e-3",
]
AIDS = ["data.mosaic=0.5", "data.copy_blend=0.5", "loss.cls=stable", "model.position_cost=0.5",
        "model.iou_cost_from=0.3", "train.no_aug_from=0.45", "train.steps=6", "train.eval_every_steps=4"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    yield from isolated_cache(tmp_path_factory, "aids")


def test_stopped_with_every_aid_then_resumed_is_bit_identical(workdir):
    """6 steps with every aid: the IoU cost from step 2, the final phase from step 3 (EMA started,
    though train.ema is off); SIGTERM at step 4 and resume: the same weights and EMA as a run
    that was never stopped."""
    def config(name):
        return apply_overrides(load_preset("tiny"), FAST + AIDS + [f"train.out={workdir / 'runs'}", f"train.name={name}"])

    straight = train(config("straight"), progress=False)
    sent = []

    def terminate(row):
        if not sent:
            sent.append(row["step"])
            os.kill(os.getpid(), signal.SIGTERM)

    first = train(config("stopped"), progress=False, on_epoch=terminate)
    assert first.interrupted and sent == [4]
    stopped = load_checkpoint(first.run_dir / "last.pt")
    assert stopped["phases"]["started"] == ["iou_cost", "no_aug"] and stopped["ema"]
    second = train(config("stopped"), resume=True, progress=False)
    a, b = (load_checkpoint(r.run_dir / "last.pt") for r in (second, straight))
    assert second.steps == straight.steps == 6
    assert int(b["ema"]["n_averaged"]) == 3  # started at the switch (progress 3/6 >= 0.45): steps 4-6
    for key in ("model", "ema"):
        different = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
        assert not different, f"{key}: {len(different)} tensors differ, e.g. {different[:3]}"
