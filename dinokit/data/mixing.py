"""The training set as the trainer draws from it: each image alone, or mixed with other images.

Two training-only aids take pixels and boxes from other training images: DEIM's mosaic (dense
one-to-one matching, `data.mosaic`: data/mosaic.py) and DEIMv2's Copy-Blend (`data.copy_blend`:
data/copyblend.py). `MixedSamples` wraps the training dataset and applies them after the image's
own augmentation; `strong(False)` turns them off together with the random transforms (the final
phase without strong augmentation, training/phases.py).

Every draw derives from the sample's own seed (training/samples.py seeds torch per sample from
(seed, epoch, index)), so a resumed run sees the same mixed images, and the image's own
augmentation is the same with or without the aids: their decisions come from a generator of
their own, and each other image is loaded under a seed drawn from it. With both aids off an item
is exactly the wrapped dataset's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from dinokit.config import DataConfig
from dinokit.data.copyblend import copy_blend
from dinokit.data.mosaic import mosaic
from dinokit.data.transforms import train_transforms

SALT = 0x6D1C  # the aids' generator: sample seed xor this, so it differs from the image's own stream

Item = tuple[Tensor, dict[str, Any]]


class MixedSamples(Dataset):
    """Item i: the dataset's item i, then with probability data.mosaic a 2 x 2 mosaic of it and
    three other training images, then with probability data.copy_blend up to
    data.copy_blend_objects objects of other training images blended in."""

    def __init__(self, base: Any, cfg: DataConfig) -> None:
        self.base, self.cfg = base, cfg
        self.mosaic, self.copy_blend, self.objects = cfg.mosaic, cfg.copy_blend, cfg.copy_blend_objects
        self.strong_on = True

    def __len__(self) -> int:
        return len(self.base)

    def strong(self, on: bool) -> None:
        """Strong augmentation on (the aids and the random transforms) or off (flip and one size):
        takes effect for the items loaded after it (a DataLoader iterator made after the call)."""
        self.strong_on = on
        self.base.transforms = train_transforms(self.cfg, strong=on)

    def __getitem__(self, index: int) -> Item:
        if not self.strong_on or (self.mosaic <= 0 and self.copy_blend <= 0):
            return self.base[index]
        generator = torch.Generator().manual_seed(torch.initial_seed() ^ SALT)
        image, target = self.base[index]
        sample = (image, target["boxes"], target["labels"])
        if self.mosaic > 0 and float(torch.rand((), generator=generator)) < self.mosaic:
            others = [self._other(index, generator) for _ in range(3)]
            sample = mosaic([sample] + [self._load(j, generator) for j in others], max(image.shape[-2:]))
        if self.copy_blend > 0 and float(torch.rand((), generator=generator)) < self.copy_blend:
            sample = copy_blend(sample, self._donors(index, generator), self.objects, generator)
        image, boxes, labels = sample
        size = torch.tensor(list(image.shape[-2:]), dtype=torch.int64)
        return image, {**target, "boxes": boxes, "labels": labels, "size": size}

    def _other(self, index: int, generator: torch.Generator) -> int:
        """Another image's index, uniform over the rest of the set (the item itself if it is alone)."""
        n = len(self.base)
        return index if n == 1 else (index + 1 + int(torch.randint(0, n - 1, (), generator=generator))) % n

    def _load(self, index: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Another image with its own augmentation, under a seed drawn from `generator`."""
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image, target = self.base[index]
        return image, target["boxes"], target["labels"]

    def _donors(self, index: int, generator: torch.Generator) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Other images until they hold `objects` boxes, at most `objects` images."""
        donors: list[tuple[Tensor, Tensor, Tensor]] = []
        while len(donors) < self.objects and sum(len(d[1]) for d in donors) < self.objects:
            donors.append(self._load(self._other(index, generator), generator))
        return donors
