"""Training samples whose augmentation draws depend only on (seed, epoch, sample index).

The transforms draw from torch's global generator. Seeding it per sample inside `fork_rng` makes
each image's flip, scale and colour jitter a function of where it sits in the run, not of how many
draws came before, so a run resumed at any step (and with any number of loader workers, whose
generators are re-made each epoch) sees the same batches as an uninterrupted one, and the main
process's generator (denoising noise, dropout) is never touched by data loading.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch (numpy's SeedSequence hash)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


class SeededSamples(Dataset):
    """Wraps a dataset: item i of epoch e is drawn under torch seed `sample_seed(seed, e, i)`.

    `set_epoch` is called before each epoch's loader iterator is made, so worker processes
    (which copy this object when the iterator starts) see the right epoch.
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base, self.seed, self.epoch = base, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, int(index)))
            return self.base[index]


class SkipSampler(Sampler[int]):
    """Drops the first `skip` indices of a (distributed) sampler: resuming mid-epoch continues
    the same epoch order without loading the batches already trained on."""

    def __init__(self, base: DistributedSampler) -> None:
        self.base = base
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


class TrainLoader:
    """One process's training batches: shuffled per epoch by a DistributedSampler (the same order
    for a seed, this rank's share under DDP), augmentation from (seed, epoch, index), and a
    resumed epoch that skips the batches already trained on. `epoch_start_state` is the loader
    generator's state when the current epoch's iterator was made (worker seeds derive from it)."""

    def __init__(self, dataset: Dataset, batch_size: int, workers: int, seed: int, world_size: int, rank: int,
                 collate_fn: Any) -> None:
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.skip_sampler = SkipSampler(self.sampler)
        self.samples = SeededSamples(dataset, seed)
        self.batch_size = batch_size
        self.loader = DataLoader(self.samples, batch_size=batch_size, sampler=self.skip_sampler, collate_fn=collate_fn,
                                 num_workers=workers, generator=torch.Generator().manual_seed(seed))
        self.steps_per_epoch = math.ceil(len(self.sampler) / batch_size)
        self.epoch_start_state = self.generator.get_state()

    @property
    def generator(self) -> torch.Generator:
        return self.loader.generator

    def epoch(self, epoch: int, done_steps: int) -> DataLoader:
        """The batches of `epoch` after the first `done_steps` (a resumed epoch)."""
        self.sampler.set_epoch(epoch)
        self.samples.set_epoch(epoch)
        self.skip_sampler.skip = done_steps * self.batch_size
        self.epoch_start_state = self.generator.get_state()
        return self.loader
