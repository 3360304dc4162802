"""Training sizes, pipelines on their own, and batch collation with padding masks."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from dinokit.config import DataConfig
from dinokit.data.transforms import (RandomSizeCrop, box_cleanup, collate, eval_transforms, train_sizes,
                                     train_transforms)


@pytest.mark.parametrize("image_size, min_size, expected", [
    (128, 96, [96, 128]),
    (800, 0, [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]),  # 0 -> 0.6 x image_size
    (128, 0, [96, 128]),  # 0.6 x 128 = 77 -> rounded up to 96
    (100, 60, [64, 96]),
    (20, 0, [20]),  # below one step: just image_size
])
def test_train_sizes(image_size, min_size, expected):
    assert train_sizes(DataConfig(image_size=image_size, min_size=min_size)) == expected


def _sample(w: int = 120, h: int = 60):
    image = Image.new("RGB", (w, h), (200, 50, 50))
    boxes = tv_tensors.BoundingBoxes([[10.0, 10.0, 50.0, 40.0], [100.0, 0.0, 100.0, 30.0]], format="XYXY",
                                     canvas_size=(h, w))
    return image, {"boxes": boxes, "labels": torch.tensor([3, 4])}


def test_eval_pipeline_resizes_longest_side():
    tf = eval_transforms(DataConfig(image_size=240))
    image, target = tf(*_sample())
    assert image.dtype == torch.float32 and image.shape == (3, 120, 240) and image.max() <= 1
    assert target["boxes"].tolist() == [[20.0, 20.0, 100.0, 80.0], [200.0, 0.0, 200.0, 60.0]]
    image, target = box_cleanup()(image, target)
    assert target["boxes"].tolist() == [[20.0, 20.0, 100.0, 80.0]] and target["labels"].tolist() == [3]
    assert tf(Image.new("RGB", (30, 60))).shape == (3, 240, 120)  # an image alone, for prediction


def test_train_pipeline_sizes_and_jitter():
    cfg = DataConfig(image_size=128, min_size=64)
    tf = train_transforms(cfg)
    sizes, colours = set(), set()
    for seed in range(10):
        torch.manual_seed(seed)
        image, target = tf(*_sample())
        assert image.dtype == torch.float32 and image.shape[-1] in (64, 96, 128)
        assert image.shape[-2] == image.shape[-1] // 2  # aspect kept
        assert target["labels"].tolist() == [3]  # the zero-width box is sanitised away
        sizes.add(image.shape[-1])
        colours.add(round(image[0, 0, 0].item(), 2))
    assert len(sizes) == 3 and len(colours) > 1


def _coordinate_image(w: int = 200, h: int = 100) -> Image.Image:
    """Red = x, green = y of each pixel: a crop's offset can be read off its first pixel."""
    xs = torch.arange(w).expand(h, w)
    ys = torch.arange(h)[:, None].expand(h, w)
    rgb = torch.stack([xs, ys, torch.zeros_like(xs)], dim=-1).to(torch.uint8)  # (h, w, 3)
    return Image.fromarray(rgb.numpy())


def test_random_size_crop_cuts_pixels_and_boxes_alike():
    boxes = tv_tensors.BoundingBoxes([[0.0, 0.0, 200.0, 100.0], [150.0, 60.0, 190.0, 95.0], [5.0, 5.0, 20.0, 20.0]],
                                     format="XYXY", canvas_size=(100, 200))
    shapes, dropped = set(), 0
    for seed in range(20):
        torch.manual_seed(seed)
        image, target = RandomSizeCrop(min_fraction=0.5)(_coordinate_image(), {"boxes": boxes, "labels": torch.tensor([0, 1, 2])})
        w, h = image.size
        assert 100 <= w <= 200 and 50 <= h <= 100
        left, top = image.getpixel((0, 0))[:2]
        assert image.getpixel((w - 1, h - 1))[:2] == (left + w - 1, top + h - 1)  # a window, not a resize
        expected = (torch.tensor(boxes.tolist()) - torch.tensor([left, top, left, top])).clamp(min=0)
        expected = torch.minimum(expected, torch.tensor([w, h, w, h]))
        assert torch.allclose(target["boxes"].as_subclass(torch.Tensor), expected)
        assert target["boxes"].canvas_size == (h, w)
        image, target = box_cleanup()(image, target)
        kept = target["labels"].tolist()
        assert 0 in kept  # the full-image box always survives
        dropped += 3 - len(kept)
        shapes.add((w, h))
    assert len(shapes) > 10 and dropped > 0  # the crops vary and some boxes fall outside


def test_train_pipeline_crops_with_its_probability():
    never = train_transforms(DataConfig(image_size=200, min_size=200, crop=0.0))
    always = train_transforms(DataConfig(image_size=200, min_size=200, crop=1.0))
    aspects_never, aspects_always = set(), set()
    for seed in range(10):
        torch.manual_seed(seed)
        aspects_never.add(tuple(never(*_sample(200, 100))[0].shape[-2:]))
        aspects_always.add(tuple(always(*_sample(200, 100))[0].shape[-2:]))
    assert aspects_never == {(100, 200)}  # resize only: the aspect is kept
    assert len(aspects_always) > 5  # every crop has its own aspect


def test_collate_pads_bottom_right_with_masks():
    a = torch.rand(3, 4, 6)
    b = torch.rand(3, 5, 3)
    ta, tb = {"image_id": 1}, {"image_id": 2}
    images, masks, targets = collate([(a, ta), (b, tb)])
    assert images.shape == (2, 3, 5, 6) and masks.shape == (2, 5, 6) and masks.dtype == torch.bool
    assert torch.equal(images[0, :, :4, :6], a) and images[0, :, 4:].abs().sum() == 0
    assert torch.equal(images[1, :, :5, :3], b) and images[1, :, :, 3:].abs().sum() == 0
    assert masks[0, 4:].all() and not masks[0, :4].any()
    assert masks[1, :, 3:].all() and not masks[1, :, :3].any()
    assert targets == [ta, tb]
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
